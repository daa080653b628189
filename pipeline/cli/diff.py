"""``cnngraph diff``: a thin shell over :func:`pipeline.analyze.diff.diff`."""

from __future__ import annotations

import click

from pipeline.cli.options import model_build_options, note_weights, progress_bar, silent_option

#: Same value as pipeline.analyze.diff.DEFAULT_TOP (not imported: `cnngraph --help` stays fast).
DEFAULT_TOP = 1000


@click.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--out", required=True, type=click.Path(), help="Output folder (layers, neurons, edges tables).")
@model_build_options
@click.option("--weights-b", default=None, help="B's --weights (default: --weights).")
@click.option("--seed-b", type=int, default=None, help="B's --seed (default: --seed).")
@click.option("--top", type=click.IntRange(0), default=DEFAULT_TOP, show_default=True,
              help="How many changed edges (largest |delta w|) edges.parquet keeps.")
@click.option("--no-check", is_flag=True, help="Folder sources: skip checking the files against their sha256.")
@silent_option
def diff_command(a: str, b: str, out: str, input_shape: str | None, no_top: bool, weights: str | None, seed: int,
                 weights_b: str | None, seed_b: int | None, top: int, no_check: bool, silent: bool) -> None:
    """Compare two checkpoints A and B of one architecture, edge by edge.

    A and B are models (keras.applications names, .keras/.h5 files; the model options apply to
    both, --weights-b/--seed-b to B only) or folders written by `cnngraph extract`. Writes
    layers.parquet (per-layer weight and bias changes), neurons.parquet (per-neuron change of
    in-strength) and edges.parquet (the --top changed edges) into --out. Two different layer
    graphs are refused, naming the first difference.
    """
    from pathlib import Path

    from pipeline.analyze.diff import diff
    from pipeline.cli.options import model_spec

    progress = progress_bar(silent)
    folders = [Path(x).is_dir() for x in (a, b)]
    if all(folders) and (input_shape or no_top or weights or weights_b or seed_b is not None):
        raise click.UsageError("the model options apply to model sources only; A and B are folders")
    sides = []
    for x, is_folder, w, s in ((a, folders[0], weights, seed),
                               (b, folders[1], weights_b or weights, seed if seed_b is None else seed_b)):
        if is_folder:
            sides.append(x)
            continue
        spec = model_spec(x, input_shape, no_top, w, s)
        note_weights(spec, progress)
        sides.append(spec)
    if sides[0] == sides[1]:
        progress.message("note: A and B are the same model, so every change is zero; pass --seed-b or "
                         "--weights-b for another checkpoint")
    try:
        result = diff(sides[0], sides[1], out, top=top, progress=progress, check=not no_check)
    finally:
        progress.finish()
    changed = result.changed_layers
    if changed:
        click.echo(f"{'layer':<28} {'type':<20} {'edges':>14} {'changed':>14} {'max |dw|':>10} {'rel. change':>11} "
                   f"{'corr':>8}")
        for la in changed:
            click.echo(f"{la.layer:<28} {la.layer_type:<20} {la.edges:>14,} {la.changed_edges:>14,} "
                       f"{la.max_abs_delta:>10.4g} {la.relative_change:>11.4g} {la.correlation:>8.4f}")
    biases = sum(1 for la in result.layers if la.changed_bias_neurons)
    click.echo(f"{result.changed_edges:,} of {result.edges:,} edges changed in {len(changed)} layers; biases changed "
               f"in {biases} layers; wrote {result.out} in {result.seconds:.1f} s")
