"""``cnngraph load`` and ``cnngraph drop``: thin shells over :mod:`pipeline.neo4j.loader`."""

from __future__ import annotations

import click

from pipeline.errors import CnnGraphError
from pipeline.progress import TqdmProgress


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
              help="Rows per online transaction (default 20000).")
@click.option("-s", "--silent", is_flag=True, help="No progress bar.")
def load_command(dir, mode, model_name, replace, batch_size, silent):
    """Load the extraction folder DIR into Neo4j and check the counts."""
    from pipeline.neo4j import loader

    progress = TqdmProgress(disable=silent)
    kwargs = {"batch_size": batch_size} if batch_size else {}
    try:
        result = loader.load(dir, mode=mode, model_name=model_name, replace=replace,
                             progress=progress, **kwargs)
    except CnnGraphError as err:
        raise click.ClickException(str(err)) from err
    finally:
        progress.finish()
    if result.skipped:
        click.echo(f"model {result.model!r} was already loaded from this extraction; counts match")
    else:
        click.echo(
            f"loaded model {result.model!r} ({result.mode}): {result.nodes:,} neurons, "
            f"{result.relationships:,} relationships, {result.layers} layers in "
            f"{result.seconds:.1f}s ({result.rels_per_second:,.0f} rels/s); counts match"
        )


@click.command("drop")
@click.argument("name")
@click.option("-s", "--silent", is_flag=True, help="No progress bar.")
def drop_command(name, silent):
    """Remove model NAME (neurons, relationships, layers) from Neo4j in batches."""
    from pipeline.neo4j import loader

    progress = TqdmProgress(disable=silent)
    try:
        deleted = loader.drop(None, name, progress=progress)
    except CnnGraphError as err:
        raise click.ClickException(str(err)) from err
    finally:
        progress.finish()
    click.echo(f"dropped model {name!r}: {deleted['nodes']:,} nodes, "
               f"{deleted['relationships']:,} relationships")
