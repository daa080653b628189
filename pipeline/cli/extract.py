"""``cnngraph plan|extract|verify|run``: thin shells over :mod:`pipeline.plan`, :mod:`pipeline.extract`,
:mod:`pipeline.replay` and :mod:`pipeline.run`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline.cli.options import (
    aggregate_option,
    build_graph,
    granularity_option,
    model_options,
    model_spec,
    note_weights,
    progress_bar,
    silent_option,
)


@click.command()
@model_options
@click.option("--layers", default=None, metavar="FIRST:LAST", help="Only these layers (names or indexes).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@granularity_option
def plan(model: str, input_shape: str | None, no_top: bool, weights: str | None, seed: int, layers: str | None,
         as_json: bool, granularity: str) -> None:
    """Exact node and edge counts per layer, and the size in each sink (nothing is generated)."""
    from pipeline.plan import (
        IMPORT_RELS_PER_SECOND,
        ONLINE_RELS_PER_SECOND,
        READ_EDGES_PER_SECOND,
        gds_bytes,
        human_bytes,
        human_seconds,
        import_file_bytes,
        import_seconds,
    )
    from pipeline.plan import plan as make_plan

    _, graph = build_graph(model, input_shape, no_top, weights, seed, progress_bar(as_json))
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
        online, read = (human_seconds(import_seconds(p.edges, r))
                        for r in (ONLINE_RELS_PER_SECOND, READ_EDGES_PER_SECOND))
        click.echo(f"neo4j online load: about {online} at {ONLINE_RELS_PER_SECOND:,} relationships/s; reading "
                   f"back into NetworkX about {read} at {READ_EDGES_PER_SECOND:,} edges/s (measured, 2 cores)")
        click.echo(f"GDS projection (weight and |w|): about {human_bytes(gds_bytes(p.nodes, p.edges))} of Neo4j "
                   "heap (cnngraph gds memory MODEL compares it with the server's)")


@click.command()
@model_options
@click.option("--out", default=None, help="Output folder or fsspec URL (s3://bucket/run); not with --format null.")
@click.option("--layers", default=None, metavar="FIRST:LAST", help="Only these layers (names or indexes).")
@click.option("--workers", type=int, default=None, help="Local worker processes  [default: the machine's cores]")
@click.option("--format", "fmt", type=click.Choice(["parquet", "null"]), default="parquet", show_default=True,
              help="null: generate, count and checksum the edges, write nothing.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Who runs the tasks: local processes, or a Dask cluster (pip install 'cnngraph[dask]').")
@click.option("--scheduler", default=None, metavar="ADDRESS", help="Dask scheduler address (tcp://HOST:8786), for --executor dask.")
@silent_option
@granularity_option
@aggregate_option
def extract(model: str, input_shape: str | None, no_top: bool, weights: str | None, seed: int, out: str | None,
            layers: str | None, workers: int | None, fmt: str, executor: str, scheduler: str | None, silent: bool,
            granularity: str, aggregate: str) -> None:
    """Write the neuron graph as Parquet (OUT/nodes, OUT/edges) and OUT/manifest.json.

    The model is built in a short-lived child process and its weights memory-mapped, so this
    process never holds TensorFlow (full VGG16 extracts in under 2 GB).
    """
    from pipeline.errors import UsageError
    from pipeline.extract import extract as run_extract
    from pipeline.extract.executors import make_executor
    from pipeline.model_store import isolated_graph
    from pipeline.plan import human_bytes
    from pipeline.plan import plan as make_plan

    if fmt == "parquet" and not out:
        raise UsageError("--out is required (or --format null to count and checksum without writing)")
    if fmt == "null":
        out = None
    progress = progress_bar(silent)
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


@click.command()
@model_options
@click.option("--folder", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Replay DIR's Parquet files against MODEL (for folders of in-memory models).")
@click.option("--samples", type=int, default=2, show_default=True, help="Random inputs to replay.")
@click.option("--tolerance", type=float, default=None, help="Largest accepted relative error.")
@click.option("--no-check", "no_check", is_flag=True, help="Skip checking the folder's files against their sha256.")
@silent_option
def verify(model: str, input_shape: str | None, no_top: bool, weights: str | None, seed: int, folder: str | None,
           samples: int, tolerance: float | None, no_check: bool, silent: bool) -> None:
    """Replay the forward pass over the edges and compare every layer with Keras.

    MODEL is a model (the engine's edges are replayed) or a folder written by `cnngraph extract`
    (its Parquet files are replayed, against the model its manifest names). Exit status 1 when
    an error exceeds the tolerance.
    """
    from pipeline.dataset import read_manifest, spec_from_manifest
    from pipeline.errors import UsageError
    from pipeline.model import build
    from pipeline.replay import TOLERANCE
    from pipeline.replay import verify as run_verify

    progress = progress_bar(silent)
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


@click.command("run")
@model_options
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Extraction folder (default: out/MODEL).")
@click.option("--layers", default=None, metavar="FIRST:LAST", help="Only these layers (skips verify).")
@click.option("--workers", type=int, default=1, show_default=True, help="Local worker processes.")
@click.option("--mode", type=click.Choice(["bulk", "online"]), default="bulk", show_default=True, help="How to load Neo4j.")
@click.option("--model-name", default=None, help="Name of the :Model in Neo4j (default: the Keras model's name).")
@click.option("--replace", is_flag=True, help="bulk: discard the database's contents; online: replace the model.")
@click.option("--verify/--no-verify", "check", default=True, show_default=True, help="Replay against Keras before loading.")
@click.option("--samples", type=int, default=1, show_default=True, help="Random inputs to replay.")
@silent_option
def run_command(model: str, input_shape: str | None, no_top: bool, weights: str | None, seed: int, out: str | None,
                layers: str | None, workers: int, mode: str, model_name: str | None, replace: bool, check: bool,
                samples: int, silent: bool) -> None:
    """Extract MODEL, verify it against Keras, load it into Neo4j and check the counts."""
    from pipeline.run import run

    progress = progress_bar(silent)
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
