"""The docs stay true: the CLI reference matches the CLI, and the README names every command."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pipeline.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def _cli_docs():
    spec = importlib.util.spec_from_file_location("cli_docs", ROOT / "scripts" / "cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current():
    assert (ROOT / "docs" / "cli.md").read_text() == _cli_docs().render(), (
        "docs/cli.md is stale: run `python scripts/cli_docs.py`"
    )


def test_readme_shows_every_command():
    readme = (ROOT / "README.md").read_text()
    for name in cli.commands:
        assert f"cnngraph {name}" in readme, f"README.md does not show `cnngraph {name}`"
    assert "make demo" in readme and "make test" in readme
