"""Deployment of trained ESPnet models: ONNX export with a parity check, onnxruntime inference, int8 weights.

* :func:`export_onnx` (``hybrid-encoders export onnx``): an experiment's ``config.yaml`` + model file -> a folder of
  ONNX graphs, ``tokens.txt`` and the frontend description, in the layout sherpa-onnx reads
  (:mod:`hybrid_encoders.deploy.onnx_export`); with ``streaming=True`` a causal Zipformer's chunk graphs with cached
  states, for sherpa-onnx's ``OnlineRecognizer`` (:mod:`hybrid_encoders.deploy.streaming_graphs`).
* :class:`OnnxAsrModel` (``hybrid-encoders transcribe --onnx DIR``): that folder run with onnxruntime, greedy CTC
  and transducer decoding (:mod:`hybrid_encoders.deploy.runtime`).

The ONNX packages are optional (``pip install 'hybrid-encoders[deploy]'``); see docs/deployment.md.
"""

from hybrid_encoders.deploy.dependencies import MissingDependencyError
from hybrid_encoders.deploy.espnet_model import ExportError
from hybrid_encoders.deploy.onnx_export import export_onnx
from hybrid_encoders.deploy.runtime import OnnxAsrModel

__all__ = ["ExportError", "MissingDependencyError", "OnnxAsrModel", "export_onnx"]
