"""Whether autocast is on for a device type, and its dtype, on every torch we support (>= 2.1).

torch 2.4 added the device-type argument to ``torch.is_autocast_enabled`` and ``torch.get_autocast_dtype``; older
releases have per-device functions (``is_autocast_cpu_enabled``, ``get_autocast_gpu_dtype``, ...).
"""

from typing import Optional

import torch

_DEVICE_ARGUMENT = hasattr(torch, "get_autocast_dtype")


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast computes in on ``device_type`` (``"cpu"``, ``"cuda"``), or None where autocast is off."""
    if _DEVICE_ARGUMENT:
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    if device_type == "cpu":  # torch < 2.4
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
