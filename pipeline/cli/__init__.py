"""The ``cnngraph`` command line: a thin layer over the library's stage functions.

This package is the only place that imports click. Library errors become one ``Error: ...`` line
and exit status 1 (``--debug`` shows the traceback); click's own usage errors exit 2. The
commands live one module per stage (``extract``: plan, extract, verify, run; ``load``: load, drop;
``neo4j``; ``gds``; ``export``; ``cypher``; ``analyze``; ``diff``), their shared options in ``options``.
"""

from __future__ import annotations

import click

from pipeline.errors import CnnGraphError


class Cli(click.Group):
    """The one error path: every failure becomes one ``Error:`` line and exit status 1.

    Our own errors carry their message; OS, Parquet and Neo4j driver errors get one that says
    what to do (:func:`explain`). ``--debug`` re-raises instead, showing the traceback.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted: rerun the same command to start again (partial output is never marked complete).", err=True)
            ctx.exit(130)
        except Exception as err:
            message = explain(err)
            if message is None or ctx.meta.get("debug"):
                raise
            click.echo(f"Error: {message}", err=True)
            ctx.exit(1)


def explain(err: BaseException) -> str | None:
    """A one-line, actionable message for an error users can meet; None for a bug (a traceback)."""
    import errno

    from pipeline.errors import is_disk_full

    if isinstance(err, CnnGraphError):
        return str(err)
    module = type(err).__module__
    if isinstance(err, OSError) and not module.startswith(("neo4j", "pyarrow")):
        where = f" {err.filename}" if err.filename else ""
        if is_disk_full(err):
            return f"the disk is full at{where or ' the output'}; free some space and run the command again"
        if isinstance(err, FileNotFoundError):
            return f"{err.filename or 'a file'} does not exist; check the path"
        if isinstance(err, PermissionError) or err.errno == errno.EROFS:
            return (f"permission denied at{where} ({err.strerror}); choose a folder you can write to, or "
                    "fix its permissions")
        return f"{err.strerror or err}{':' + where if where else ''}; check the path and run the command again"
    if module.startswith("pyarrow"):
        return (f"a Parquet file could not be read or written ({type(err).__name__}: {err}); if it is part of "
                "an extraction folder, the folder is damaged: rerun `cnngraph extract` into it")
    if module.startswith("neo4j"):
        name = type(err).__name__
        text = ((getattr(err, "message", None) or str(err)).strip().splitlines() or [""])[0]  # one line
        if name in ("AuthError", "Unauthorized", "CredentialsExpired"):
            return f"Neo4j refused the credentials ({text}); check NEO4J_USERNAME and NEO4J_PASSWORD"
        if name in ("ServiceUnavailable", "SessionExpired"):
            return (f"Neo4j is unreachable ({text}); start it with `cnngraph neo4j start`, or check NEO4J_URI")
        code = str(getattr(err, "code", "") or "")
        if "MemoryPool" in code or "OutOfMemory" in code or "OutOfMemory" in text:
            return (f"Neo4j ran out of memory ({text}); give it more heap (CNNGRAPH_NEO4J_HEAP) or select "
                    "less (--layers, a smaller --input-shape)")
        return f"Neo4j: {name}: {text}"
    return None


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(package_name="cnngraph")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Exact neuron-level graphs of Keras CNNs: plan, extract, verify, load into Neo4j, export."""
    ctx.meta["debug"] = debug


def _register_commands() -> None:
    """Attach the commands, one module per stage (each imports lazily what its command needs)."""
    from pipeline.cli import analyze, cypher, diff, export, extract, gds, load, neo4j, report

    for command in (extract.plan, extract.extract, extract.verify, extract.run_command, cypher.cypher_command,
                    neo4j.neo4j_group, gds.gds_group, load.load_command, load.drop_command, export.export_command,
                    analyze.analyze_command, diff.diff_command, report.report_command):
        cli.add_command(command)

_register_commands()


def main() -> None:
    """The console script ``cnngraph`` (and ``python -m pipeline``)."""
    cli(prog_name="cnngraph")


if __name__ == "__main__":
    main()
