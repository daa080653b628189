"""One `Error:` line for what users meet at the Neo4j end: a missing query file, a bad query, a
wrong password; `--debug` shows the traceback instead."""

from __future__ import annotations

from click.testing import CliRunner

from pipeline import errors
from pipeline.cli import cli


def last_line(res) -> str:
    return res.output.strip().splitlines()[-1]


def env_of(conn, **extra) -> dict[str, str]:
    return {"NEO4J_URI": conn.uri, "NEO4J_USERNAME": conn.username, "NEO4J_PASSWORD": conn.password, **extra}


def test_missing_query_file(neo4j_conn, tmp_path):
    missing = tmp_path / "missing.cypher"
    res = CliRunner().invoke(cli, ["cypher", str(missing)], env=env_of(neo4j_conn))
    assert res.exit_code == 1
    assert last_line(res) == (f"Error: {missing} does not exist; give a Cypher query or an existing .cypher "
                              "file (the project's cypher/ folder holds ready ones)")


def test_bad_query_and_wrong_password(neo4j_conn):
    res = CliRunner().invoke(cli, ["cypher", "MATCH (n RETURN n"], env=env_of(neo4j_conn))
    assert res.exit_code == 1
    assert last_line(res).startswith(f"Error: Neo4j at {neo4j_conn.uri} failed during the query: "
                                     "Neo.ClientError.Statement.SyntaxError: Invalid input")
    assert len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(cli, ["--debug", "cypher", "MATCH (n RETURN n"], env=env_of(neo4j_conn))
    assert isinstance(res.exception, errors.Neo4jError)  # raised, with its traceback
    res = CliRunner().invoke(cli, ["cypher", "RETURN 1"], env=env_of(neo4j_conn, NEO4J_PASSWORD="wrong-password"))
    assert res.exit_code == 1
    assert last_line(res) == (f"Error: Neo4j at {neo4j_conn.uri} rejected user 'neo4j': check NEO4J_PASSWORD "
                              "(for the managed server, `cnngraph neo4j env` prints the right one)")
