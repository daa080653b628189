"""ONNX front end: an .onnx model walked into the same exact neuron graph as a Keras model.

``walk_onnx(path_or_proto)`` gives the ModelGraph; ``build_onnx(spec)`` the pair (runnable model,
graph) that ``pipeline.model.build`` returns for a .onnx file; ``verify_onnx`` replays the edges
against onnxruntime. Supported ops and the semantics handled: docs/onnx.md.
"""

from pipeline.onnx.graph import SUPPORTED_OPS, OnnxWalk, load_proto, walk_onnx
from pipeline.onnx.reference import OnnxModel, build_onnx, load_onnx, verify_onnx

__all__ = ["SUPPORTED_OPS", "OnnxModel", "OnnxWalk", "build_onnx", "load_onnx", "load_proto", "verify_onnx", "walk_onnx"]
