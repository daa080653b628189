"""``run``: extract, verify and load in one go, each stage's small result kept for the summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import VerificationError
from pipeline.extract import ExtractResult, extract
from pipeline.model import ModelSpec, build
from pipeline.progress import NULL, Progress
from pipeline.replay import VerifyResult, verify


@dataclass
class RunResult:
    extract: ExtractResult
    verify: VerifyResult | None
    load: object  # pipeline.neo4j.loader.LoadResult


def run(
    spec: ModelSpec,
    out: str | Path,
    layers: str | None = None,
    mode: str = "bulk",
    model_name: str | None = None,
    replace: bool = False,
    check: bool = True,
    samples: int = 1,
    workers: int = 1,
    progress: Progress = NULL,
) -> RunResult:
    """Extract a model into out, replay it against Keras (unless check=False), load it into Neo4j.

    The folder's files are not checked against their sha256 again before replay and load: this
    call has just written them. Raises VerificationError when replay exceeds its tolerance:
    nothing is loaded then.
    """
    from pipeline.neo4j import loader

    model, graph = build(spec)
    extracted = extract(graph, out, layers=layers, progress=progress, workers=workers)
    checked = None
    if check and not layers:
        checked = verify(model, graph, folder=out, samples=samples, progress=progress, check=False)
        if not checked.ok:
            worst = max(checked.errors, key=checked.errors.get)
            raise VerificationError(
                f"replay differs from Keras at layer {worst} (relative error {checked.worst:.2e} > "
                f"{checked.tolerance:.0e}); nothing was loaded. Please report this with the model"
            )
    del model
    loaded = loader.load(out, mode=mode, model_name=model_name, replace=replace, progress=progress,
                         check=False)
    return RunResult(extracted, checked, loaded)
