"""Walk an ONNX model into the same ModelGraph the Keras walk gives (plain data for every stage).

Graph inputs become InputLayers named after them; each node that computes values becomes a layer
named after the node (its first output when unnamed), with the Keras type and config of the
translator that has its semantics (:mod:`pipeline.onnx.convert`); re-indexing ops (Flatten, Reshape,
Transpose, ...: :mod:`pipeline.onnx.reindex`) alias their input where they can. The returned
:class:`OnnxWalk` also says which ONNX value each layer holds, so :mod:`pipeline.onnx.reference` can
compare replay with onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from pipeline.errors import ModelError, UsageError
from pipeline.model_files import provenance
from pipeline.onnx import reindex
from pipeline.onnx.convert import CONVERTERS as _COMPUTING
from pipeline.onnx.convert import attrs, label
from pipeline.onnx.values import ONNX_DOC, Reference, Walker
from pipeline.spec import ModelGraph, ModelSpec

#: ONNX op type -> converter (the default domain).
CONVERTERS = {**_COMPUTING, **reindex.CONVERTERS}

#: ONNX ops this front end converts (default domain).
SUPPORTED_OPS = sorted(CONVERTERS)


@dataclass
class OnnxWalk:
    """A walked ONNX model: the graph, the model proto, and the ONNX value behind each layer."""

    graph: ModelGraph
    proto: onnx.ModelProto
    references: dict[str, Reference]
    inputs: dict[str, str]  # InputLayer name -> ONNX graph input name


def load_proto(source: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """The ModelProto of a file (checked by onnx.checker) or the proto itself."""
    if isinstance(source, onnx.ModelProto):
        return source
    path = Path(source)
    if not path.is_file():
        raise ModelError(f"ONNX file {path} does not exist")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as err:  # onnx raises DecodeError, ValidationError, ...
        raise ModelError(f"{path} is not a valid ONNX model: {str(err).splitlines()[0][:300]}") from err
    return proto


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            a = attrs(node)
            if "value" in a:
                consts[node.output[0]] = numpy_helper.to_array(a["value"])
            elif "value_float" in a or "value_int" in a:
                consts[node.output[0]] = np.asarray(a.get("value_float", a.get("value_int")))
            elif "value_floats" in a or "value_ints" in a:
                consts[node.output[0]] = np.asarray(a.get("value_floats", a.get("value_ints")))
    return consts


def _input_shape(vi: onnx.ValueInfoProto) -> tuple[int, ...]:
    t = vi.type.tensor_type
    if t.elem_type != onnx.TensorProto.FLOAT:
        raise ModelError(f"graph input {vi.name!r} is {onnx.TensorProto.DataType.Name(t.elem_type)}; "
                         "only float32 inputs are supported")
    dims = list(t.shape.dim)
    if len(dims) < 2:
        raise ModelError(f"graph input {vi.name!r} has rank {len(dims)}; expected (N, F) or (N, C, *spatial)")
    shape = []
    for d in dims[1:]:
        if not d.HasField("dim_value") or d.dim_value <= 0:
            raise ModelError(f"graph input {vi.name!r} has an unknown dimension {d.dim_param or '?'}: export the "
                             "model with fixed sizes except the batch axis")
        shape.append(int(d.dim_value))
    return tuple(shape)


def _opset(proto: onnx.ModelProto) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=13)


def _fold(w: Walker, node: onnx.NodeProto) -> bool:
    """Compute a node on constants only (the shape arithmetic exporters write, a shared weight's
    Identity) or a Shape (our shapes are fixed; the batch is 1, as every sample runs alone); True if done."""
    ins = [i for i in node.input if i]
    if node.domain not in ("", "ai.onnx") or not ins:
        return False
    if node.op_type == "Shape" and ins[0] in w.values:
        a = attrs(node)
        shape = np.asarray([1, *w.values[ins[0]].onnx_ids().shape], np.int64)
        w.constants[node.output[0]] = shape[a.get("start", 0) : a.get("end", len(shape))]
        return True
    feeds = {i: w.const(i) for i in ins}
    if any(v is None for v in feeds.values()):
        return False
    from onnx.reference import ReferenceEvaluator

    infos = [onnx.helper.make_tensor_value_info(i, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
             for i, v in feeds.items()]
    outs = [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o]
    model = onnx.helper.make_model(onnx.helper.make_graph([node], "fold", infos, outs),
                                   opset_imports=[onnx.helper.make_opsetid("", w.opset)])
    try:
        values = ReferenceEvaluator(model).run(None, {i: np.asarray(v) for i, v in feeds.items()})
    except Exception:  # an op the evaluator lacks: the converters decide (and name the node)
        return False
    for o, v in zip([o for o in node.output if o], values, strict=True):
        w.constants[o] = np.asarray(v)
    return True


def walk_full(source: str | Path | onnx.ModelProto, spec: ModelSpec | None = None, reader: Any = None) -> OnnxWalk:
    """Walk an ONNX model; ``reader`` maps each weight (an object with ``numpy()``) to its array."""
    from pipeline.layers import registry

    proto = load_proto(source)
    g = proto.graph
    consts = _constants(g)
    w = Walker(constants=consts, supported=SUPPORTED_OPS, reader=reader, opset=_opset(proto))
    w.graph_outputs = {o.name for o in g.output}
    for node in g.node:
        for i in node.input:
            w.consumers.setdefault(i, []).append(node)
    inputs: dict[str, str] = {}
    for vi in g.input:
        if vi.name in consts:
            continue
        onnx_shape = _input_shape(vi)
        spatial = len(onnx_shape) > 1
        shape = (*onnx_shape[1:], onnx_shape[0]) if spatial else onnx_shape
        name = w.unique(vi.name)
        w.emit(name, "InputLayer", {"batch_shape": [None, *shape]}, {}, [], shape, spatial=spatial,
               onnx_value=vi.name)
        inputs[name] = vi.name
    if not inputs:
        raise ModelError("the ONNX graph has no tensor input")
    for node in g.node:
        if node.op_type == "Constant" or id(node) in w.done or _fold(w, node):
            continue
        convert = CONVERTERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if convert is None:
            op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            w.refuse(label(node), op, f"no converter for this op; supported ONNX ops: {', '.join(SUPPORTED_OPS)}")
        convert(w, node)
    for out in g.output:
        if out.name not in w.values:
            raise ModelError(f"graph output {out.name!r} is not a computed tensor (a constant?); see {ONNX_DOC}")
        w.value(out.name, out.name, "output")  # a pending re-indexing gets its layer
    for s in w.layers:
        registry.get(s.type, s.name).check(s)
    name = g.name or (Path(source).stem if not isinstance(source, onnx.ModelProto) else "onnx_model")
    graph = ModelGraph(name=name, layers=w.layers, total_neurons=w.offset, spec=spec, provenance=provenance(spec, name))
    return OnnxWalk(graph, proto, w.references, inputs)


def walk_onnx(source: str | Path | onnx.ModelProto, spec: ModelSpec | None = None, reader: Any = None) -> ModelGraph:
    """The ModelGraph of an ONNX model (a path or a ModelProto), as :func:`pipeline.model.walk` gives for Keras."""
    return walk_full(source, spec, reader).graph


def check_onnx_spec(spec: ModelSpec) -> None:
    """Refuse build options that do not apply to an ONNX file."""
    if spec.input_shape is not None:
        raise UsageError("--input-shape applies to keras.applications names, not to ONNX files (their shapes are fixed)")
    if spec.weights is not None:
        raise UsageError("--weights does not apply to an ONNX file: it carries its own weights")
