"""Zipformer convolution module (spec §5.7): sigmoid-gated projection -> depthwise conv -> SwooshR -> Linear.

The depthwise convolution is "same"-padded, or chunk-causal in a causal (streaming) Zipformer
(:mod:`hybrid_encoders.layers.chunk_causal_conv`).
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from hybrid_encoders.layers.chunk_causal_conv import ChunkCausalDepthwiseConv1d
from hybrid_encoders.layers.depthwise_conv import same_depthwise_conv1d
from hybrid_encoders.layers.lean_autograd import SIGMOID
from hybrid_encoders.layers.lean_autograd import gate as lean_gate
from hybrid_encoders.layers.swoosh import SwooshLinear
from hybrid_encoders.regularization.balancer import Balancer
from hybrid_encoders.regularization.scheduled_float import ScheduledFloat, whitening_schedule
from hybrid_encoders.regularization.whiten import Whiten


class ZipformerConvModule(nn.Module):
    """Convolution block of a Zipformer layer (icefall ConvolutionModule).

    ``in_proj`` gives ``x | s``; ``x * sigmoid(s)`` is zeroed at padded frames, convolved depthwise ("same"
    padding, or chunk-causal), passed through SwooshR and projected back.

    Args:
        channels: channels C.
        kernel_size: odd depthwise kernel size.
        causal: chunk-causal depthwise convolution (icefall ``--causal 1``; other parameter names).

    Shapes: ``forward(x (B, T, C), key_padding_mask (B, T) or None, chunk_size) -> (B, T, C)``.
    """

    def __init__(self, channels: int, kernel_size: int, causal: bool = False):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ZipformerConvModule: kernel_size must be odd, got {kernel_size}")
        self.causal = causal
        self.in_proj = nn.Linear(channels, 2 * channels)
        if causal:
            self.depthwise_conv = ChunkCausalDepthwiseConv1d(channels, kernel_size)
        else:
            self.depthwise_conv = nn.Conv1d(
                channels, channels, kernel_size, padding=kernel_size // 2, groups=channels
            )
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

    def forward(
        self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None, chunk_size: int = -1
    ) -> torch.Tensor:
        """``chunk_size``: frames per chunk of the causal convolution (-1: one chunk); ignored when not causal."""
        gated = self.gate(x, key_padding_mask).transpose(1, 2)  # (B, C, T)
        if self.causal:
            return self.output(self.depthwise_conv(gated, chunk_size))
        return self.output(same_depthwise_conv1d(self.depthwise_conv, gated))

    def gate(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x * sigmoid(s)`` of the projection (B, T, C), zero at padded frames."""
        projected = self.in_proj(x)
        if self.training:
            values, gate = projected.chunk(2, dim=-1)
            gated = lean_gate(values, self.balancer1(gate), SIGMOID)  # saves no sigmoid output for backward
        else:
            gated = F.glu(projected, dim=-1)  # first half * sigmoid(second half), one fused op
        if key_padding_mask is not None:
            gated = gated.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)
        return gated

    def output(self, convolved: torch.Tensor) -> torch.Tensor:
        """Depthwise-convolved (B, C, T) -> SwooshR -> projection (B, T, C)."""
        return self.out_proj(self.whiten(self.balancer2(convolved).transpose(1, 2)))
