"""Squeezeformer's convolution module (paper Sec. 3.3; TF ``ConvModule``, NeMo ``ConformerConvolution`` with Swish).

Paper / NeMo (``glu=False``): pointwise d -> 2d, Swish, depthwise conv on 2d channels + BatchNorm, Swish,
pointwise 2d -> d. Conformer and WeNet's Squeezeformer (``glu=True``): pointwise d -> 2d, GLU -> d, depthwise conv
on d channels + BatchNorm, Swish, pointwise d -> d. Padded frames are zeroed right before the depthwise convolution,
the only layer that mixes time steps, so valid outputs never depend on padding.

The "depthwise conv + norm" stage is a module passed in by the caller (HybridFormer swaps in a re-parameterisable
multi-branch convolution); :class:`DepthwiseConvNorm` is the default.
"""

from typing import Callable

import torch
from torch import nn

from hybrid_encoders.layers.depthwise_conv import same_depthwise_conv1d
from hybrid_encoders.layers.export_mode import is_exporting
from hybrid_encoders.layers.lean_autograd import SILU, activation_dropout_linear
from hybrid_encoders.layers.time_major_batch_norm import TimeMajorBatchNorm1d


class DepthwiseConvNorm(nn.Module):
    """Depthwise 'same' Conv1d (bias) followed by BatchNorm1d: (B, C, T) -> (B, C, T).

    Args:
        channels: number of channels C (one filter each).
        kernel_size: odd temporal kernel size (31 in the paper).
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"DepthwiseConvNorm: kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = TimeMajorBatchNorm1d(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Paper (TF) initialisation: U(-a, a), a = kernel_size^-1/2 for weight and bias; BatchNorm to identity."""
        bound = self.conv.kernel_size[0] ** -0.5
        nn.init.uniform_(self.conv.weight, -bound, bound)
        nn.init.uniform_(self.conv.bias, -bound, bound)
        self.norm.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, T)."""
        return self.norm(same_depthwise_conv1d(self.conv, x))


class ConvolutionModule(nn.Module):
    """Pointwise - (Swish | GLU) - depthwise + norm - Swish - pointwise, on (B, T, d) sequences.

    Args:
        d_model: input and output dimension d.
        build_depthwise: called once with the depthwise channel count (2d, or d with ``glu``); returns the
            "depthwise conv + norm" module, (B, C, T) -> (B, C, T), e.g. ``lambda c: DepthwiseConvNorm(c, 31)``.
        glu: WeNet/Conformer variant (GLU halves the 2d channels to d) instead of the paper's Swish.
    """

    def __init__(self, d_model: int, build_depthwise: Callable[[int], nn.Module], glu: bool = False):
        super().__init__()
        self.glu = glu
        channels = d_model if glu else 2 * d_model  # GLU halves the pointwise output
        # 1x1 convolutions over time, kept as Linear layers on (B, T, C) so no transposes are needed
        self.pointwise_conv1 = nn.Linear(d_model, 2 * d_model)
        self.depthwise = build_depthwise(channels)
        self.pointwise_conv2 = nn.Linear(channels, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Paper (TF) initialisation: both pointwise convs U(-a, a), a = d^-1/2 (TF uses d for the second one too,
        although its fan-in is 2d); the depthwise stage resets itself."""
        bound = self.pointwise_conv1.in_features**-0.5
        for layer in (self.pointwise_conv1, self.pointwise_conv2):
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.uniform_(layer.bias, -bound, bound)
        if hasattr(self.depthwise, "reset_parameters"):
            self.depthwise.reset_parameters()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Convolve.

        Args:
            x: (B, T, d).
            mask: (B, 1, T) bool, True at valid frames.

        Returns:
            (B, T, d).
        """
        x = self.pointwise_conv1(x)  # (B, T, 2d)
        x = nn.functional.glu(x, dim=-1) if self.glu else nn.functional.silu(x)
        if is_exporting() or not mask.all():
            x = x.masked_fill(~mask.transpose(1, 2), 0.0)
        x = self.depthwise(x.transpose(1, 2)).transpose(1, 2)  # (B, C, T) view of (B, T, C) memory, and back
        # Swish -> pointwise conv, keeping only the Swish input for the backward pass (training memory)
        return activation_dropout_linear(x, SILU, self.pointwise_conv2.weight, self.pointwise_conv2.bias)
