"""Depthwise convolution over time, computed as a channels-last 2-D convolution.

Every encoder here has a depthwise temporal convolution on ``(B, C, T)`` data that is a transposed view of a
``(B, T, C)`` sequence. Given as such to ``conv1d``, oneDNN copies it to ``(B, C, T)`` memory and runs its slow
depthwise path: on this CPU a 512-channel, 31-tap conv over 2 x 750 frames takes about 11 ms that way and about 3 ms
as a ``(B, C, 1, T)`` image in channels-last memory, which that view already is (no copy). This module is the one place
that knows the trick; the Squeezeformer / HybridFormer / Zipformer convolution modules call it.
"""

from typing import Optional

import torch
from torch import nn


def depthwise_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], left_pad: int, right_pad: int
) -> torch.Tensor:
    """Depthwise, stride-1 convolution of ``x`` with ``left_pad`` / ``right_pad`` zero frames at the ends.

    Args:
        x: (B, C, T).
        weight: (C, 1, k), one filter per channel.
        bias: (C,) or None.
        left_pad, right_pad: zero frames added before the first and after the last frame (``right_pad <= left_pad``;
            equal for odd "same" kernels, one less for the left-leaning even kernels of HybridFormer's NSR).

    Returns:
        (B, C, T + left_pad + right_pad - k + 1): ``y[:, c, t] = bias[c] + Σ_i weight[c, 0, i] x[:, c, t - left_pad + i]``.
    """
    if not 0 <= right_pad <= left_pad:
        raise ValueError(f"depthwise_conv1d: need 0 <= right_pad <= left_pad, got {left_pad}, {right_pad}")
    image = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # (B, C, 1, T)
    y = nn.functional.conv2d(image, weight.unsqueeze(2), bias, padding=(0, left_pad), groups=weight.size(0))
    # Symmetric padding by left_pad gives left_pad - right_pad extra frames at the end, which only the extra right
    # padding reaches: drop them.
    extra = left_pad - right_pad
    y = y.squeeze(2)
    return y[..., : y.size(-1) - extra] if extra else y
