"""The optional packages of deployment (``pip install 'hybrid-encoders[deploy]'``), imported on first use.

Training never needs them, so they are not install requirements; a missing one raises
:class:`MissingDependencyError` with the pip command that installs it, instead of a bare ``ImportError``.
"""

import importlib
from types import ModuleType

# import name -> (pip requirement, what it is needed for)
OPTIONAL_PACKAGES = {
    "onnx": ("onnx", "writing ONNX files"),
    "onnxscript": ("onnxscript", "torch.onnx.export (the dynamo exporter translates through onnxscript)"),
    "onnxruntime": ("onnxruntime", "running and quantising ONNX models"),
    "sherpa_onnx": ("sherpa-onnx", "decoding with sherpa-onnx"),
}


class MissingDependencyError(ImportError):
    """An optional deployment package is not installed; the message says how to install it."""


def require(module: str) -> ModuleType:
    """Import the optional package ``module`` (a key of :data:`OPTIONAL_PACKAGES`).

    Raises:
        MissingDependencyError: not installed; the message names the package, why it is needed and the pip command.
    """
    requirement, purpose = OPTIONAL_PACKAGES[module]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{requirement} is needed for {purpose} but cannot be imported ({error}); install it with: "
            f"pip install '{requirement}'  (or all deployment packages: pip install 'hybrid-encoders[deploy]')"
        ) from error
