"""``cnngraph load`` and ``cnngraph drop``: thin shells over :mod:`pipeline.neo4j.loader`."""

from __future__ import annotations

import click

from pipeline.cli.options import progress_bar, silent_option


@click.command("load")
@click.argument("dir", type=click.Path(exists=True, file_okay=False))
@click.option("--mode", type=click.Choice(["bulk", "online"]), default="bulk", show_default=True,
              help="bulk: neo4j-admin import into the managed server (replaces the database); "
                   "online: Bolt batches into any server, resumable.")
@click.option("--model-name", default=None,
              help="Name of the :Model in Neo4j (default: the Keras model's name).")
@click.option("--replace", is_flag=True,
              help="bulk: discard the database's contents; online: drop a model of that name first.")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Rows per online transaction (default 100000).")
@click.option("--writers", type=click.IntRange(1), default=None,
              help="online: concurrent transactions, whose batches share no neuron "
                   "(default min(4, the server's CPU cores)).")
@click.option("--files-only", "files_only", type=click.Path(file_okay=False), default=None,
              help="bulk: only write neo4j-admin import files and import.sh into this folder, for a "
                   "Neo4j server on another machine.")
@click.option("--after-import", is_flag=True,
              help="bulk: after import.sh ran on that server: add the schema and :Layer nodes and "
                   "check the counts (server from NEO4J_URI).")
@click.option("--input-type", type=click.Choice(["csv", "csv.gz"]), default=None,
              help="Import file format (default: csv for the managed server, csv.gz with --files-only).")
@click.option("--no-check", "check", is_flag=True, flag_value=False, default=True,
              help="Do not check the extraction's files against the sha256 sums in its manifest first "
                   "(saves reading them once; a damaged file then fails mid-load).")
@silent_option
def load_command(dir: str, mode: str, model_name: str | None, replace: bool, batch_size: int | None,
                 writers: int | None, files_only: str | None, after_import: bool, input_type: str | None, check: bool,
                 silent: bool) -> None:
    """Load the extraction folder DIR into Neo4j and check the counts."""
    from pipeline.neo4j import bulk, loader
    from pipeline.plan import human_bytes

    if (files_only or after_import) and mode != "bulk":
        raise click.UsageError("--files-only and --after-import belong to --mode bulk")
    if writers is not None and mode != "online":
        raise click.UsageError("--writers belongs to --mode online")
    if files_only and after_import:
        raise click.UsageError("--files-only and --after-import are two steps: run them one after the other")
    progress = progress_bar(silent)
    kwargs: dict = {"batch_size": batch_size} if batch_size else {}
    if mode == "online":
        kwargs["writers"] = writers  # None: the default, min(4, server cores)
    try:
        if files_only:
            files = bulk.write_server_files(dir, files_only, model_name, input_type or "csv.gz", progress,
                                            check=check)
        elif after_import:
            result = bulk.after_import(dir, model_name, progress)
        else:
            if input_type:
                kwargs["input_type"] = input_type
            result = loader.load(dir, mode=mode, model_name=model_name, replace=replace,
                                 progress=progress, check=check, **kwargs)
    finally:
        progress.finish()
    if files_only:
        click.echo(
            f"wrote import files for model {files.model!r} ({files.nodes:,} neurons, "
            f"{files.relationships:,} relationships, {human_bytes(files.bytes)}) to {files.folder} "
            f"in {files.seconds:.1f}s\n"
            f"next, on the Neo4j machine with the database stopped: NEO4J_HOME=/path/to/neo4j sh "
            f"{files.script} [--overwrite-destination=true]\n"
            f"then start Neo4j and run: cnngraph load {dir} --after-import --model-name {files.model}"
        )
        return
    if after_import:
        click.echo(f"completed model {result.model!r}: {result.nodes:,} neurons, {result.relationships:,} "
                   f"relationships, {result.layers} layers; schema and layers written; counts match")
    elif result.skipped:
        click.echo(f"model {result.model!r} was already loaded from this extraction; counts match")
    else:
        click.echo(
            f"loaded model {result.model!r} ({result.mode}): {result.nodes:,} neurons, "
            f"{result.relationships:,} relationships, {result.layers} layers in "
            f"{result.seconds:.1f}s ({result.rels_per_second:,.0f} rels/s); counts match"
        )


@click.command("drop")
@click.argument("name")
@silent_option
def drop_command(name: str, silent: bool) -> None:
    """Remove model NAME (neurons, relationships, layers) from Neo4j in batches."""
    from pipeline.neo4j import loader

    progress = progress_bar(silent)
    try:
        deleted = loader.drop(None, name, progress=progress)
    finally:
        progress.finish()
    click.echo(f"dropped model {name!r}: {deleted['nodes']:,} nodes, "
               f"{deleted['relationships']:,} relationships")
