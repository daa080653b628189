"""Write docs/cli.md from the CLI's own help texts (a test checks it is up to date).

    python scripts/cli_docs.py            # rewrite docs/cli.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.cli import cli  # noqa: E402


def render() -> str:
    lines = [
        "# CLI reference",
        "",
        "Generated from `cnngraph --help` by `scripts/cli_docs.py`; `tests/test_docs.py` checks it.",
        "",
    ]

    def walk(cmd: click.Command, path: list[str]) -> None:
        ctx = click.Context(
            cmd, info_name=" ".join(path), terminal_width=88, max_content_width=88, help_option_names=["-h", "--help"]
        )
        lines.extend([f"## `{' '.join(path)}`", "", "```", cmd.get_help(ctx), "```", ""])
        if isinstance(cmd, click.Group):
            for name in sorted(cmd.commands):
                walk(cmd.commands[name], [*path, name])

    walk(cli, ["cnngraph"])
    return "\n".join(lines)


if __name__ == "__main__":
    (ROOT / "docs" / "cli.md").write_text(render())
