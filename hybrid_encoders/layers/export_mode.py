"""Whether a model is being traced for export (ONNX, ``torch.export``), for the few export-friendly code paths.

Eager inference takes shortcuts that read tensor values in Python (``int(lengths.max())``, ``bool(mask.any())``,
``for start in range(0, frames, chunk)``). A tracer turns such a value into a constant of the one example input:
the exported graph would then be right only for inputs of that length, or would not export at all (torch.export's
``GuardOnDataDependentSymNode``). Under :func:`is_exporting` the layers take the general path instead, which gives
the same values as the shortcut (every shortcut skips work that would not change the result).
"""

import torch


def is_exporting() -> bool:
    """True inside ``torch.export`` / ``torch.onnx.export`` (dynamo or TorchScript tracing), else False."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
