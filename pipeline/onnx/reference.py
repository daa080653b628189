"""onnxruntime as the oracle: every layer's ONNX value, and verify (replay vs onnxruntime).

Each value a layer holds is added to the graph's outputs, so onnxruntime returns the intermediate
results too; they are moved to our layout (channels last, a Flatten's feature order) and compared
with the replay of the edges, layer by layer, as :func:`pipeline.replay.verify` does for Keras.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from pipeline.errors import ModelError
from pipeline.onnx.graph import OnnxWalk, check_onnx_spec, walk_full
from pipeline.progress import NULL, Progress
from pipeline.spec import ModelGraph, ModelSpec


class OnnxModel:
    """A walked ONNX model that runs in onnxruntime (what ``build`` returns for a .onnx file)."""

    def __init__(self, walked: OnnxWalk):
        self.walked = walked
        self.name = walked.graph.name
        self._session = None

    def session(self):
        """An onnxruntime session whose outputs are the values of every layer (built once)."""
        if self._session is None:
            import onnxruntime as ort

            proto = onnx.ModelProto()
            proto.CopyFrom(self.walked.proto)
            have = {o.name for o in proto.graph.output}
            for ref in self.walked.references.values():
                if ref.value not in have:
                    proto.graph.output.append(onnx.helper.make_tensor_value_info(ref.value, onnx.TensorProto.FLOAT, None))
                    have.add(ref.value)
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return self._session

    def layer_outputs(self, graph: ModelGraph, inputs: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
        """onnxruntime's value of every layer that owns neurons, in our layout, one sample at a time.

        ``inputs`` maps an InputLayer's id offset to its values (samples, *our shape).
        """
        sess = self.session()
        names = [o.name for o in sess.get_outputs()]
        feeds_by_name = {}
        for spec in graph.layers:
            if spec.type == "InputLayer":
                x = inputs[spec.output.offset]
                feeds_by_name[self.walked.inputs[spec.name]] = np.moveaxis(x, -1, 1) if x.ndim > 2 else x
        samples = next(iter(feeds_by_name.values())).shape[0]
        runs = [sess.run(names, {k: v[s : s + 1] for k, v in feeds_by_name.items()}) for s in range(samples)]
        value = {n: np.concatenate([r[i] for r in runs]) for i, n in enumerate(names)}
        return {layer: ref.to_ours(value[ref.value]) for layer, ref in self.walked.references.items()}


def load_onnx(source: str | Path | onnx.ModelProto, spec: ModelSpec | None = None, reader=None) -> OnnxModel:
    """Walk an ONNX file or proto into an :class:`OnnxModel` (its graph is ``.walked.graph``)."""
    return OnnxModel(walk_full(source, spec, reader))


def build_onnx(spec: ModelSpec, reader=None) -> tuple[OnnxModel, ModelGraph]:
    """Read the .onnx file a spec names and walk it: (runnable model, ModelGraph)."""
    check_onnx_spec(spec)
    model = load_onnx(spec.source, spec, reader)
    return model, model.walked.graph


def verify_onnx(model: OnnxModel, graph: ModelGraph, folder: str | Path | None = None, samples: int = 2,
                seed: int = 0, tolerance: float | None = None, progress: Progress = NULL, check: bool = True):
    """Replay the graph (from the engine, or an extraction folder) against onnxruntime:
    :func:`pipeline.replay.verify`, which takes an ONNX model's reference from onnxruntime (the
    parts of a node, like its ``/pad``, are checked through the node)."""
    from pipeline.replay import TOLERANCE, verify

    if not isinstance(model, OnnxModel):
        raise ModelError("verify_onnx needs the OnnxModel that build_onnx or load_onnx returned")
    return verify(model, graph, folder, samples, seed, TOLERANCE if tolerance is None else tolerance, progress, check)
