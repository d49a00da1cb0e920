"""Learnable per-channel scale and bias: Squeezeformer's "scaled post-LN" (paper Sec. 3.3.2).

Squeezeformer drops the pre-LayerNorm of every module and instead feeds the module ``scale * x + bias`` (one
scale and bias per channel), while the residual path keeps the un-scaled ``x`` and a LayerNorm follows the residual
addition.
"""

import torch
from torch import nn


class ScaleBias(nn.Module):
    """``y = scale * x + bias`` over the last dimension; initialised to the identity (scale 1, bias 0).

    Args:
        d_model: channel dimension.
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.scale)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d_model) -> (..., d_model)."""
        return x * self.scale + self.bias
