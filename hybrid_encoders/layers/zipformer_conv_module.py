"""Zipformer convolution module (spec §5.7): sigmoid-gated projection -> depthwise conv -> SwooshR -> Linear."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from hybrid_encoders.layers.depthwise_conv import same_depthwise_conv1d
from hybrid_encoders.layers.swoosh import SwooshLinear
from hybrid_encoders.regularization.balancer import Balancer
from hybrid_encoders.regularization.scheduled_float import ScheduledFloat, whitening_schedule
from hybrid_encoders.regularization.whiten import Whiten


class ZipformerConvModule(nn.Module):
    """Convolution block of a Zipformer layer (icefall ConvolutionModule, non-causal).

    ``in_proj`` gives ``x | s``; ``x * sigmoid(s)`` is zeroed at padded frames, convolved depthwise ("same"
    padding), passed through SwooshR and projected back.

    Args:
        channels: channels C.
        kernel_size: odd depthwise kernel size.

    Shapes: ``forward(x (B, T, C), key_padding_mask (B, T) or None) -> (B, T, C)``.
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ZipformerConvModule: kernel_size must be odd, got {kernel_size}")
        self.in_proj = nn.Linear(channels, 2 * channels)
        self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.out_proj = SwooshLinear(channels, channels, "swoosh_r", initial_scale=0.05)
        self.balancer1 = Balancer(
            channels, channel_dim=-1, min_positive=ScheduledFloat((0.0, 0.05), (8000.0, 0.025)), max_positive=1.0,
            min_abs=1.5, max_abs=ScheduledFloat((0.0, 5.0), (8000.0, 10.0), default=1.0),
        )  # fmt: skip
        self.balancer2 = Balancer(
            channels, channel_dim=1, min_positive=ScheduledFloat((0.0, 0.1), (8000.0, 0.05)), max_positive=1.0,
            min_abs=ScheduledFloat((0.0, 0.2), (20000.0, 0.5)), max_abs=10.0,
        )  # fmt: skip
        self.whiten = Whiten(1, whitening_schedule(7.5), prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        projected = self.in_proj(x)
        if self.training:
            values, gate = projected.chunk(2, dim=-1)
            gated = values * torch.sigmoid(self.balancer1(gate))
        else:
            gated = F.glu(projected, dim=-1)  # first half * sigmoid(second half), one fused op
        if key_padding_mask is not None:
            gated = gated.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)
        convolved = self.balancer2(same_depthwise_conv1d(self.depthwise_conv, gated.transpose(1, 2)))  # (B, C, T)
        return self.out_proj(self.whiten(convolved.transpose(1, 2)))
