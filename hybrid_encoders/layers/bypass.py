"""Zipformer's learned bypass (paper §3.1): ``out = x_orig + c * (x - x_orig)`` with a learned per-channel c.

One module serves the mid-layer bypass, the end-of-layer bypass (which also implements layer drop) and the
combiner of a downsampled stack with its input.

Exported graphs spell the interpolation out: the ONNX decomposition of ``torch.lerp`` (two formulas and a Where,
for accuracy at weights near 1) costs onnxruntime 5x the three element-wise operations.
"""

import torch
from torch import nn

from hybrid_encoders.layers.export_mode import is_exporting
from hybrid_encoders.regularization.balancer import limit_param_value
from hybrid_encoders.regularization.scheduled_float import FloatLike, ScheduledFloat


class BypassModule(nn.Module):
    """Learned interpolation between a module's input and output.

    In training, ``bypass_scale`` is pushed into ``[scale_min, scale_max]`` through its gradient (never clamped),
    and with probability ``skip_rate`` a whole sequence takes ``src_orig`` unchanged (layer drop).

    Args:
        embed_dim: channels C.
        skip_rate: per-sequence layer-drop probability (float or ScheduledFloat).
        scale_min, scale_max: gradient-enforced range of the scale; ``None`` for scale_min means icefall's schedule
            0.9 -> 0.2 over 20000 batches.

    Shapes: ``forward(src_orig (B, T, C), src (B, T, C)) -> (B, T, C)``.
    """

    def __init__(
        self,
        embed_dim: int,
        skip_rate: FloatLike = 0.0,
        scale_min: FloatLike = None,
        scale_max: FloatLike = 1.0,
    ):
        super().__init__()
        self.bypass_scale = nn.Parameter(torch.empty(embed_dim))
        self.skip_rate = skip_rate
        self.scale_min = ScheduledFloat((0.0, 0.9), (20000.0, 0.2), default=0.0) if scale_min is None else scale_min
        self.scale_max = scale_max
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.bypass_scale, 0.5)

    def forward(self, src_orig: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        scale = self.bypass_scale
        if self.training:
            scale = limit_param_value(scale, float(self.scale_min), float(self.scale_max))
            skip_rate = float(self.skip_rate)
            if skip_rate != 0.0:
                keep = torch.rand(src.size(0), 1, 1, device=src.device) > skip_rate
                scale = scale * keep.to(scale.dtype)
        if is_exporting():
            return src_orig + scale * (src - src_orig)
        if src_orig.dtype == src.dtype == scale.dtype:
            return torch.lerp(src_orig, src, scale)
        dtype = torch.promote_types(src_orig.dtype, src.dtype)  # they differ under autocast
        return torch.lerp(src_orig.to(dtype), src.to(dtype), scale.to(dtype))
