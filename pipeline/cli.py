"""The ``cnngraph`` command line: a thin layer over the library's stage functions.

Library errors become one ``Error: ...`` line and exit status 1 (``--debug`` shows the traceback);
click's own usage errors exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline.errors import CnnGraphError
from pipeline.progress import TqdmProgress
from pipeline.schema import AGGREGATES, GRANULARITIES


class Cli(click.Group):
    """The one error path: every failure becomes one ``Error:`` line and exit status 1.

    Our own errors carry their message; OS, Parquet and Neo4j driver errors get one that says
    what to do (:func:`explain`). ``--debug`` re-raises instead, showing the traceback.
    """

    def invoke(self, ctx: click.Context):
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


def model_options(fn):
    """Options that say which model to build (shared by every command that takes MODEL)."""
    fn = click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights used without --weights.")(fn)
    fn = click.option("--weights", default=None,
                      help="'imagenet' (Keras downloads them once) or a weights file; default: seeded random weights.")(fn)
    fn = click.option("--no-top", is_flag=True, help="Drop the classifier head (include_top=False).")(fn)
    fn = click.option("--input-shape", default=None, metavar="H,W,C", help="Input shape of a keras.applications model.")(fn)
    fn = click.argument("model")(fn)
    return fn


#: --granularity and --aggregate (pipeline.granularity; names from pipeline.schema).
granularity_option = click.option(
    "--granularity", type=click.Choice(list(GRANULARITIES)), default="neuron", show_default=True,
    help="A node per neuron, per channel (feature map or unit), or per Keras layer.",
)
aggregate_option = click.option(
    "--aggregate", type=click.Choice(list(AGGREGATES)), default="l1", show_default=True,
    help="Channel granularity: how an edge's weight summarises its kernel slice.",
)


def _progress(silent: bool = False) -> TqdmProgress:
    return TqdmProgress(disable=silent)


def model_spec(model: str, input_shape: str | None, no_top: bool, weights: str | None, seed: int):
    """The ModelSpec of the model options."""
    from pipeline.model import ModelSpec, parse_input_shape

    return ModelSpec(model, parse_input_shape(input_shape), not no_top, weights, seed)


def note_weights(spec, progress) -> None:
    """Tell the user when an application's weights are seeded random ones."""
    from pipeline.model import random_weights_note

    note = random_weights_note(spec)
    if note:
        progress.message(note)


def build_graph(model: str, input_shape: str | None, no_top: bool, weights: str | None, seed: int, progress):
    """Build (or read) a model and walk it."""
    from pipeline.model import build

    spec = model_spec(model, input_shape, no_top, weights, seed)
    built = build(spec)
    note_weights(spec, progress)
    return built


@cli.command()
@model_options
@click.option("--layers", default=None, metavar="FIRST:LAST", help="Only these layers (names or indexes).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@granularity_option
def plan(model, input_shape, no_top, weights, seed, layers, as_json, granularity):
    """Exact node and edge counts per layer, and the size in each sink (nothing is generated)."""
    from pipeline.plan import (
        IMPORT_RELS_PER_SECOND,
        human_bytes,
        human_seconds,
        import_file_bytes,
        import_seconds,
    )
    from pipeline.plan import plan as make_plan

    _, graph = build_graph(model, input_shape, no_top, weights, seed, _progress(as_json))
    p = make_plan(graph, layers, granularity)
    if as_json:
        click.echo(json.dumps(p.to_json(), indent=1))
        return
    click.echo(f"{'layer':<28} {'type':<22} {'output':<18} {'nodes':>14} {'edges':>18}")
    for lp in p.layers:
        shape = "x".join(map(str, lp.output_shape))
        mark = " (boundary)" if lp.boundary else ""
        click.echo(f"{lp.name:<28} {lp.type:<22} {shape:<18} {lp.nodes:>14,} {lp.edges:>18,}{mark}")
    click.echo(f"{'total':<70} {p.nodes:>14,} {p.edges:>18,}")
    click.echo("estimated size: " + ", ".join(f"{k} {human_bytes(v)}" for k, v in p.bytes.items()))
    if "neo4j" in p.bytes:
        click.echo(
            f"neo4j bulk import: files about {human_bytes(import_file_bytes(p.edges, p.nodes))} (csv.gz; "
            f"{human_bytes(import_file_bytes(p.edges, p.nodes, 'csv'))} as csv), "
            f"store about {human_bytes(p.bytes['neo4j'])}, import about "
            f"{human_seconds(import_seconds(p.edges))} at {IMPORT_RELS_PER_SECOND:,} relationships/s (measured, 2 cores)"
        )


@cli.command()
@model_options
@click.option("--out", default=None, help="Output folder or fsspec URL (s3://bucket/run); not with --format null.")
@click.option("--layers", default=None, metavar="FIRST:LAST", help="Only these layers (names or indexes).")
@click.option("--workers", type=int, default=None, help="Local worker processes  [default: the machine's cores]")
@click.option("--format", "fmt", type=click.Choice(["parquet", "null"]), default="parquet", show_default=True,
              help="null: generate, count and checksum the edges, write nothing.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Who runs the tasks: local processes, or a Dask cluster (pip install 'cnngraph[dask]').")
@click.option("--scheduler", default=None, metavar="ADDRESS", help="Dask scheduler address (tcp://HOST:8786), for --executor dask.")
@click.option("-s", "--silent", is_flag=True, help="No progress bar.")
@granularity_option
@aggregate_option
def extract(model, input_shape, no_top, weights, seed, out, layers, workers, fmt, executor, scheduler, silent, granularity, aggregate):
    """Write the neuron graph as Parquet (OUT/nodes, OUT/edges) and OUT/manifest.json.

    The model is built in a short-lived child process and its weights memory-mapped, so this
    process never holds TensorFlow (full VGG16 extracts in under 2 GB).
    """
    from pipeline.errors import UsageError
    from pipeline.executors import make_executor
    from pipeline.extract import extract as run_extract
    from pipeline.graph_store import isolated_graph
    from pipeline.plan import human_bytes
    from pipeline.plan import plan as make_plan

    if fmt == "parquet" and not out:
        raise UsageError("--out is required (or --format null to count and checksum without writing)")
    if fmt == "null":
        out = None
    progress = _progress(silent)
    runner = make_executor(executor, workers, scheduler)
    spec = model_spec(model, input_shape, no_top, weights, seed)
    with isolated_graph(spec) as graph:
        note_weights(spec, progress)
        p = make_plan(graph, layers, granularity)
        where = f"into {out}" if out else "(null sink: count and checksum only)"
        progress.message(
            f"extracting {p.nodes:,} nodes and {p.edges:,} edges (about {human_bytes(p.bytes['parquet'])} of Parquet) {where}"
        )
        res = run_extract(
            graph, out, layers=layers, progress=progress, workers=workers, executor=runner,
            granularity=granularity, aggregate=aggregate,
        )
    verb = f"wrote {res.nodes:,} nodes and {res.edges:,} edges to {out}" if out else f"counted {res.nodes:,} nodes and {res.edges:,} edges"
    click.echo(f"{verb} in {res.seconds:.1f} s ({res.edges_per_second / 1e6:.1f} M edges/s); counts match the plan")


@cli.command()
@model_options
@click.option("--folder", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Replay DIR's Parquet files against MODEL (for folders of in-memory models).")
@click.option("--samples", type=int, default=2, show_default=True, help="Random inputs to replay.")
@click.option("--tolerance", type=float, default=None, help="Largest accepted relative error.")
@click.option("--no-check", "no_check", is_flag=True, help="Skip checking the folder's files against their sha256.")
@click.option("-s", "--silent", is_flag=True, help="No progress bar.")
def verify(model, input_shape, no_top, weights, seed, folder, samples, tolerance, no_check, silent):
    """Replay the forward pass over the edges and compare every layer with Keras.

    MODEL is a model (the engine's edges are replayed) or a folder written by `cnngraph extract`
    (its Parquet files are replayed, against the model its manifest names). Exit status 1 when
    an error exceeds the tolerance.
    """
    from pipeline.errors import UsageError
    from pipeline.extract import read_manifest, spec_from_manifest
    from pipeline.model import build
    from pipeline.replay import TOLERANCE
    from pipeline.replay import verify as run_verify

    progress = _progress(silent)
    from_folder = Path(model).is_dir()
    if from_folder:
        if folder is not None:
            raise UsageError(f"{model} is a folder: give a model with --folder DIR, or the folder alone")
        folder = model
    if folder is not None:
        manifest = read_manifest(folder)
        if manifest["options"].get("layers"):
            raise UsageError("verify needs a whole-model extraction; this folder holds a --layers slice")
    if from_folder:
        keras_model, graph = build(spec_from_manifest(manifest, folder))
    else:
        keras_model, graph = build_graph(model, input_shape, no_top, weights, seed, progress)
    res = run_verify(
        keras_model, graph, folder=folder, samples=samples, seed=seed,
        tolerance=tolerance if tolerance is not None else TOLERANCE, progress=progress, check=not no_check,
    )
    click.echo(f"{'layer':<28} worst relative error")
    for name, err in res.errors.items():
        flag = "" if err <= res.tolerance else "  FAIL"
        click.echo(f"{name:<28} {err:.3e}{flag}")
    verdict = "passed" if res.ok else "FAILED"
    click.echo(f"verify {verdict}: {res.edges:,} edges, {res.samples} samples, worst {res.worst:.3e} (tolerance {res.tolerance:.0e})")
    if not res.ok:
        sys.exit(1)


@cli.command("run")
@model_options
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Extraction folder (default: out/MODEL).")
@click.option("--layers", default=None, metavar="FIRST:LAST", help="Only these layers (skips verify).")
@click.option("--workers", type=int, default=1, show_default=True, help="Local worker processes.")
@click.option("--mode", type=click.Choice(["bulk", "online"]), default="bulk", show_default=True, help="How to load Neo4j.")
@click.option("--model-name", default=None, help="Name of the :Model in Neo4j (default: the Keras model's name).")
@click.option("--replace", is_flag=True, help="bulk: discard the database's contents; online: replace the model.")
@click.option("--verify/--no-verify", "check", default=True, show_default=True, help="Replay against Keras before loading.")
@click.option("--samples", type=int, default=1, show_default=True, help="Random inputs to replay.")
@click.option("-s", "--silent", is_flag=True, help="No progress bar.")
def run_command(model, input_shape, no_top, weights, seed, out, layers, workers, mode, model_name, replace, check, samples, silent):
    """Extract MODEL, verify it against Keras, load it into Neo4j and check the counts."""
    from pipeline.run import run

    progress = _progress(silent)
    spec = model_spec(model, input_shape, no_top, weights, seed)
    note_weights(spec, progress)
    out = out or str(Path("out") / Path(model).stem)
    res = run(spec, out, layers, mode, model_name, replace, check, samples, workers, progress)
    ex, ld = res.extract, res.load
    click.echo(f"extracted {ex.nodes:,} nodes and {ex.edges:,} edges to {out} in {ex.seconds:.1f} s")
    if res.verify is not None:
        click.echo(f"verified: worst relative error {res.verify.worst:.2e} over {res.verify.samples} sample(s)")
    click.echo(
        f"loaded model {ld.model!r} ({ld.mode}): {ld.nodes:,} neurons, {ld.relationships:,} relationships "
        f"in {ld.seconds:.1f} s; counts match the manifest"
    )


@cli.command("cypher")
@click.argument("query")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="A query parameter (JSON or text); repeatable.")
@click.option("--limit", type=int, default=50, show_default=True, help="Rows to print at most.")
def cypher_command(query, params, limit):
    """Run QUERY (Cypher text or a .cypher file, e.g. cypher/layer_summary.cypher) and print its rows."""
    from pipeline.neo4j.query import parse_params, run_query

    keys, rows = run_query(query, parse_params(params), limit=limit, progress=_progress())
    click.echo("\t".join(keys))
    for row in rows:
        click.echo("\t".join(json.dumps(v) if isinstance(v, (list, dict)) else str(v) for v in row))


def _register_commands() -> None:
    """Attach the commands defined next to their stages (each imports lazily what it needs)."""
    from pipeline.export_cli import export_command
    from pipeline.neo4j.cli_load import drop_command, load_command
    from pipeline.neo4j.cli_server import neo4j_group

    cli.add_command(neo4j_group, "neo4j")
    cli.add_command(load_command, "load")
    cli.add_command(drop_command, "drop")
    cli.add_command(export_command, "export")


_register_commands()


def main() -> None:
    cli(prog_name="cnngraph")


if __name__ == "__main__":
    main()
