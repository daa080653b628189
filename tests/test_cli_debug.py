"""Every command goes through the one error path: ``--debug`` raises the library's error (with its
traceback), and without it the user sees one ``Error:`` line and exit status 1.

No server is needed: NEO4J_URI points at a closed port, and the managed server's settings are bad
before anything is touched (CNNGRAPH_HOME is a fresh folder).
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.errors import CnnGraphError

#: Each command with arguments that make it fail (``{tmp}``: a fresh empty folder).
FAILING = {
    "plan": ["plan", "nosuchnet"],
    "extract": ["extract", "vgg16", "--input-shape", "32,x,3", "--out", "{tmp}/out", "-s"],
    "verify": ["verify", "vgg16", "--folder", "{tmp}/missing", "-s"],
    "run": ["run", "vgg16", "--input-shape", "0,32,3", "--out", "{tmp}/out", "-s"],
    "load": ["load", "{tmp}", "-s"],
    "drop": ["drop", "bad name!", "-s"],
    "cypher": ["cypher", "RETURN 1"],
    "export": ["export", "{tmp}/missing.keras", "--out", "{tmp}/g.graphml", "-s"],
    "neo4j start": ["neo4j", "start", "-s"],
    "neo4j stop": ["neo4j", "stop"],
    "neo4j status": ["neo4j", "status"],
    "neo4j env": ["neo4j", "env"],
    "gds memory": ["gds", "memory", "m"],
    "gds project": ["gds", "project", "m"],
    "gds drop": ["gds", "drop", "g"],
    # analyze and report build a model source in a child process (a TensorFlow start-up each):
    # these fail before it starts (test_scale and test_provenance raise and print the child's errors).
    "analyze": ["analyze", "{tmp}", "--out", "{tmp}/a", "-s"],
    "diff": ["diff", "{tmp}/missing.keras", "{tmp}/missing.keras", "--out", "{tmp}/d", "-s"],
    "report": ["report", "vgg16", "--input-shape", "32,x,3", "--out", "{tmp}/r", "-s"],
}


def failing(command: str, tmp: str) -> list[str]:
    return [arg.replace("{tmp}", tmp) for arg in FAILING[command]]


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {
        "NEO4J_URI": "bolt://127.0.0.1:9",  # nothing listens there
        "NEO4J_USERNAME": "neo4j",
        "NEO4J_PASSWORD": "unused",
        "CNNGRAPH_HOME": str(tmp_path / "home"),
        "CNNGRAPH_NEO4J_PORT": "notaport",  # the managed server refuses before touching its home
    }


def test_every_command_is_covered():
    groups = {name for name, cmd in cli.commands.items() if isinstance(cmd, click.Group)}
    names = set(cli.commands) - groups
    names |= {f"{group} {name}" for group in groups for name in cli.commands[group].commands}
    assert names == set(FAILING)


@pytest.mark.parametrize("command", sorted(FAILING))
def test_debug_raises_the_error(command, env, tmp_path):
    res = CliRunner().invoke(cli, ["--debug", *failing(command, str(tmp_path))], env=env)
    assert isinstance(res.exception, CnnGraphError), (command, res.exception, res.output)


@pytest.mark.parametrize("command", sorted(FAILING))
def test_without_debug_one_error_line(command, env, tmp_path):
    res = CliRunner().invoke(cli, failing(command, str(tmp_path)), env=env)
    assert res.exit_code == 1, (command, res.output)
    assert isinstance(res.exception, SystemExit)
    lines = res.output.strip().splitlines()
    assert [line for line in lines if line.startswith("Error: ")] == lines[-1:], res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "home").exists()  # the managed server's home was never touched
