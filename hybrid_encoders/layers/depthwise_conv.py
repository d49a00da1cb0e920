"""Depthwise convolutions: over time, computed as a channels-last 2-D convolution; and a 2-D one whose weight
gradient is computed with matrix products on CPU.

Every encoder here has a depthwise temporal convolution on ``(B, C, T)`` data that is a transposed view of a
``(B, T, C)`` sequence. Given to ``conv1d`` as such, oneDNN runs a slow depthwise path; as a ``(B, C, 1, T)`` image in
channels-last memory, which that view already is (no copy), it takes a fast one. Measured on the 2-core development
CPU (2 threads, median of 30): 512 channels, 31 taps, 2 x 750 frames (Squeezeformer-SM at 30 s): 0.85 ms against
20.1 ms at inference; forward + backward is 2-2.5x faster at the mini recipe's training shapes (batch 8, 150-300
frames, 192-512 channels) and 1.3x slower at 2 x 750 frames x 512 channels. This module is the one place that knows
the trick; the Squeezeformer / HybridFormer (every NSR mode) / Zipformer convolution modules call it.

The weight gradient of a depthwise convolution is a slow oneDNN CPU kernel. Zipformer's embed runs a 7 x 7 one on
(2, 128, 1496, 19) images at batch 2 x 30 s, and its weight gradient took 233 ms, ten times the input gradient:
:func:`same_depthwise_conv2d` computes it as batched matrix products instead (76 ms there) and the input gradient as
the convolution with the flipped kernel. The temporal one's weight gradient took 12 ms for 31 taps over 2 x 748
frames x 256 channels (a Zipformer-M layer at 30 s), 60 times its forward pass: :func:`depthwise_conv1d` computes it
as one more depthwise convolution, of the input with the output's gradient as the filter (1.5 ms there; 0.1 against
0.45 ms at the mini recipe's 8 x 60 frames x 144 channels, 15 taps), on channel-major copies of both. Both apply
on CPU in float32 or 64 outside autocast; elsewhere (GPU, autocast) the gradients are those of ``conv2d``.
"""

from typing import Optional, Tuple

import torch
from torch import nn

from hybrid_encoders.layers.autocast_state import autocast_dtype


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
        (B, C, T + left_pad + right_pad - k + 1), with
        ``y[:, c, t] = bias[c] + Σ_i weight[c, 0, i] x[:, c, t - left_pad + i]`` (zero outside the sequence).
    """
    if not 0 <= right_pad <= left_pad:
        raise ValueError(f"depthwise_conv1d: need 0 <= right_pad <= left_pad, got {left_pad}, {right_pad}")
    image = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # (B, C, 1, T)
    if _fast_cpu_backward(x) and torch.is_grad_enabled():
        y = _DepthwiseTimeConv.apply(image, weight.unsqueeze(2), bias, left_pad)
    else:
        y = nn.functional.conv2d(image, weight.unsqueeze(2), bias, padding=(0, left_pad), groups=weight.size(0))
    # Symmetric padding by left_pad gives left_pad - right_pad extra frames at the end, which only the extra right
    # padding reaches: drop them.
    extra = left_pad - right_pad
    y = y.squeeze(2)
    return y[..., : y.size(-1) - extra] if extra else y


def same_depthwise_conv1d(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a depthwise ``nn.Conv1d`` with "same" padding (odd k, ``padding = k // 2``), computed by
    :func:`depthwise_conv1d`: (B, C, T) -> (B, C, T)."""
    padding = conv.padding[0]
    return depthwise_conv1d(x, conv.weight, conv.bias, padding, padding)


def _fast_cpu_backward(x: torch.Tensor) -> bool:
    """Whether this module's backward passes apply to ``x``: on CPU, in float32 or 64, outside autocast."""
    full_precision = x.dtype in (torch.float32, torch.float64) and autocast_dtype("cpu") is None
    return x.device.type == "cpu" and full_precision


class _DepthwiseTimeConv(torch.autograd.Function):
    """Depthwise ``conv2d`` of (B, C, 1, T) images with (0, pad) padding; the weight gradient by
    :func:`depthwise_conv1d_weight_grad`, the input gradient by oneDNN's own kernel (a fast one)."""

    @staticmethod
    def forward(ctx, image: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], pad: int) -> torch.Tensor:
        ctx.save_for_backward(image, weight)
        ctx.has_bias, ctx.pad = bias is not None, pad
        return nn.functional.conv2d(image, weight, bias, padding=(0, pad), groups=weight.size(0))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        image, weight = ctx.saved_tensors
        grad_image = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_image = torch.ops.aten.convolution_backward(
                grad, image, weight, None, [1, 1], [0, ctx.pad], [1, 1], False, [0, 0], weight.size(0),
                [True, False, False],
            )[0]  # fmt: skip
        if ctx.needs_input_grad[1]:
            grad_weight = depthwise_conv1d_weight_grad(image.squeeze(2), grad.squeeze(2), ctx.pad).unsqueeze(2)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=(0, 2, 3))
        return grad_image, grad_weight, grad_bias, None


def depthwise_conv1d_weight_grad(x: torch.Tensor, grad: torch.Tensor, pad: int) -> torch.Tensor:
    """Weight gradient of a stride-1 depthwise convolution over time with ``pad`` zero frames at both ends.

    ``dW[c, 0, i] = sum_{b, t} xp[b, c, t + i] g[b, c, t]``, ``xp`` the padded input: for each (b, c) the correlation
    of ``xp[b, c]`` with ``g[b, c]`` at lags 0 .. k - 1, i.e. a depthwise convolution over B C channels whose filters
    are the gradient rows, summed over b.

    Args:
        x: (B, C, T) input of the convolution.
        grad: (B, C, T + 2 pad - k + 1) gradient of its output.
        pad: zero frames at each end.

    Returns:
        (C, 1, k).
    """
    batch, channels, frames = x.shape
    # (1, B C, 1, T + 2 pad) and (B C, 1, 1, T') in channel-major memory: oneDNN reorders a time-major image to this
    # layout itself, more slowly (2 x 750 frames x 512 channels, 31 taps: 5.3 against 8.0 ms)
    image = nn.functional.pad(x.reshape(1, batch * channels, 1, frames), (pad, pad))
    filters = grad.reshape(batch * channels, 1, 1, -1).contiguous()
    lags = nn.functional.conv2d(image, filters, groups=batch * channels)  # (1, B C, 1, k)
    return lags.view(batch, channels, -1).sum(dim=0).unsqueeze(1)


class _SameDepthwiseConv2d(torch.autograd.Function):
    """Stride-1 depthwise ``conv2d`` with "same" padding and the backward pass of :func:`same_depthwise_conv2d`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return nn.functional.conv2d(x, weight, bias, padding=_same_padding(weight), groups=weight.size(0))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # the transposed convolution of a stride-1 "same" one: the flipped kernel
            grad_x = nn.functional.conv2d(grad, weight.flip(-2, -1), padding=_same_padding(weight),
                                          groups=weight.size(0))  # fmt: skip
        if ctx.needs_input_grad[1]:
            grad_weight = depthwise_conv2d_weight_grad(x, grad, weight.shape[-2:])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=(0, 2, 3))
        return grad_x, grad_weight, grad_bias


def _same_padding(weight: torch.Tensor) -> Tuple[int, int]:
    return (weight.size(-2) - 1) // 2, (weight.size(-1) - 1) // 2


def depthwise_conv2d_weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel_size: Tuple[int, int]) -> torch.Tensor:
    """Weight gradient of a stride-1 depthwise ``conv2d`` with "same" padding (odd kernel sides), by matrix products.

    ``dW[c, 0, i, j] = sum_{b, t, f} xp[b, c, t + i, f + j] g[b, c, t, f]``, ``xp`` the zero-padded input. For each
    kernel row i, one batched product over (b, c) of the rows ``xp[b, c, t + i, :]`` (a strided view: no copy) with
    ``g[b, c, t, :]`` over t gives every (f', f) pair, ``(B, C, F + kw - 1, F)``; kernel column j is the sum of its
    j-th sub-diagonal (f' = f + j).

    Args:
        x: (B, C, T, F) input of the convolution.
        grad: (B, C, T, F) gradient of its output.
        kernel_size: (kh, kw), both odd.

    Returns:
        (C, 1, kh, kw).
    """
    kh, kw = kernel_size
    padded = nn.functional.pad(x.contiguous(), ((kw - 1) // 2, (kw - 1) // 2, (kh - 1) // 2, (kh - 1) // 2))
    frames = x.size(2)
    weight_grad = x.new_empty(x.size(1), kh, kw)
    for i in range(kh):
        pairs = torch.matmul(padded[:, :, i : i + frames].transpose(-1, -2), grad)  # (B, C, F + kw - 1, F)
        for j in range(kw):
            weight_grad[:, i, j] = pairs.diagonal(offset=-j, dim1=-2, dim2=-1).sum(dim=(0, -1))
    return weight_grad.unsqueeze(1)


def same_depthwise_conv2d(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a stride-1 depthwise ``nn.Conv2d`` with "same" padding (odd kernel sides, ``padding = k // 2``):
    (B, C, T, F) -> (B, C, T, F). On CPU in float32 (or 64) outside autocast, the backward pass is
    :class:`_SameDepthwiseConv2d`'s."""
    if not (_fast_cpu_backward(x) and torch.is_grad_enabled()):
        return conv(x)
    return _SameDepthwiseConv2d.apply(x, conv.weight, conv.bias)
