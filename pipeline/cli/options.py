"""Options and helpers shared by the commands: one declaration, so one help text, per option."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from pipeline.cli.progress import TqdmProgress
from pipeline.progress import Progress
from pipeline.schema import AGGREGATES, GRANULARITIES

F = TypeVar("F", bound=Callable[..., Any])


def model_build_options(fn: F) -> F:
    """--input-shape, --no-top, --weights, --seed: how to build a model (without its argument)."""
    fn = click.option("--seed", type=int, default=0, show_default=True,
                      help="Seed of the random weights used without --weights.")(fn)
    fn = click.option("--weights", default=None,
                      help="'imagenet' (Keras downloads them once), a torchvision weights name such as DEFAULT "
                           "(torchvision:NAME), or a weights file; default: seeded random weights.")(fn)
    fn = click.option("--no-top", is_flag=True, help="Drop the classifier head (include_top=False).")(fn)
    fn = click.option("--input-shape", default=None, metavar="H,W,C",
                      help="Input shape of a keras.applications or torchvision:NAME model.")(fn)
    return fn


def target_options(target_help: str):
    """--target, --class and --thresholds of the analysis (``analyze``, ``report``)."""
    def decorate(fn: F) -> F:
        fn = click.option("--thresholds", default=None, metavar="T1,T2,..",
                          help="|w| thresholds of the sweep  [default: 0,1e-4,1e-3,3e-3,0.01,0.03,0.1]")(fn)
        fn = click.option("--class", "klass", type=click.IntRange(0), default=None, metavar="K",
                          help="The target is unit K of the last layer.")(fn)
        return click.option("--target", default=None, metavar="LAYER:INDEX", help=target_help)(fn)
    return decorate


def model_options(fn: F) -> F:
    """The MODEL argument and the options that say how to build it (every command that takes MODEL)."""
    return click.argument("model")(model_build_options(fn))


#: --granularity and --aggregate (pipeline.extract.coarse; names from pipeline.schema).
granularity_option = click.option(
    "--granularity", type=click.Choice(list(GRANULARITIES)), default="neuron", show_default=True,
    help="A node per neuron, per channel (feature map or unit), or per Keras layer.",
)
aggregate_option = click.option(
    "--aggregate", type=click.Choice(list(AGGREGATES)), default="l1", show_default=True,
    help="Channel granularity: how an edge's weight summarises its kernel slice.",
)

#: -s/--silent: no progress bar (messages and errors still show).
silent_option = click.option("-s", "--silent", is_flag=True, help="No progress bar.")


def progress_bar(silent: bool = False) -> TqdmProgress:
    """The CLI's progress: a tqdm bar on a terminal (none with ``-s``), messages always."""
    return TqdmProgress(disable=silent)


def model_spec(model: str, input_shape: str | None, no_top: bool, weights: str | None, seed: int):
    """The ModelSpec of the model options."""
    from pipeline.model import parse_input_shape
    from pipeline.spec import ModelSpec

    return ModelSpec(model, parse_input_shape(input_shape), not no_top, weights, seed)


def source_or_model(source: str, input_shape: str | None, no_top: bool, weights: str | None, seed: int,
                    progress: Progress):
    """SOURCE as the export-like commands take it: a folder or ``neo4j:NAME`` as given, else the
    ModelSpec it names (the model options apply to models only)."""
    from pathlib import Path

    if source.startswith("neo4j:") or Path(source).is_dir():
        if input_shape or no_top or weights:
            raise click.UsageError("--input-shape, --no-top and --weights apply to model sources only")
        return source
    spec = model_spec(source, input_shape, no_top, weights, seed)
    note_weights(spec, progress)
    return spec


def note_weights(spec, progress: Progress) -> None:
    """Tell the user when an application's weights are seeded random ones."""
    from pipeline.model_files import random_weights_note

    note = random_weights_note(spec)
    if note:
        progress.message(note)


def build_graph(model: str, input_shape: str | None, no_top: bool, weights: str | None, seed: int,
                progress: Progress):
    """Build (or read) a model and walk it: (keras model, ModelGraph)."""
    from pipeline.model import build

    spec = model_spec(model, input_shape, no_top, weights, seed)
    built = build(spec)
    note_weights(spec, progress)
    return built
