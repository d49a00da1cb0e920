"""Gradient-only constraints: the Balancer and its small relatives (spec §6.3, §6.5).

Each function here is the identity in the forward pass and only edits gradients in the backward pass:

* :class:`Balancer` nudges each channel's activation statistics (sign balance and RMS) into a range.
* :func:`scale_grad` multiplies a gradient by a constant (the embed's first convolution).
* :func:`limit_param_value` flips the gradient sign of parameter elements outside a range.
* :func:`penalize_abs_values_gt` adds ``penalty * relu(|x| - limit)`` to the loss without computing it.

Training only: in eval mode, or when no gradient flows, they return their input untouched.
"""

import math
import random
from typing import Optional, Tuple

import torch
from torch import nn

from hybrid_encoders.layers.lean_autograd import channel_slices
from hybrid_encoders.regularization.scheduled_float import FloatLike, ScheduledFloat


def _proportion_positive_to_mean(proportion: float) -> float:
    """The mean/std ratio of a Gaussian that is positive with the given probability (icefall's approximation).

    ``0.8139535143 * atanh(2 p - 1)`` approximates ``erfinv(2 p - 1) * sqrt(2)`` well enough for a soft limit;
    the 1e-10 keeps p = 0 or 1 finite.
    """
    x = 2.0 * proportion - 1.0
    return 0.8139535143 * (math.log(1 + x + 1e-10) - math.log(1 - x + 1e-10)) / 2.0


def _abs_to_rms(mean_abs: float) -> float:
    """RMS of a zero-mean Gaussian whose mean absolute value is ``mean_abs`` (factor sqrt(pi / 2))."""
    return 1.25331413732 * mean_abs


def channel_mean_and_variance(x: torch.Tensor, channel_dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each channel's mean and (biased) variance over every other axis, as ``E[x^2] - mean^2``.

    A plain sum and a 2-norm are vectorised reductions; ``torch.var_mean`` runs Welford's update element by element
    and took 7x as long on the embed's (2, 384, 1496, 19) activations (53 against 8 ms, 2 threads). The cancellation
    of ``E[x^2] - mean^2`` costs relative precision ``eps * mean^2 / var`` in the variance, about 1e-5 at the
    mean/std ratio of 10 that lies far outside every Balancer's range; the result is clamped at 0.

    Args:
        x: float tensor of any shape, channel axis ``channel_dim``.

    Returns:
        ``(mean, var)``, shaped like ``x`` with every axis but the channel axis of size 1.
    """
    dims = [d for d in range(x.ndim) if d != channel_dim % x.ndim]
    count = x.numel() // x.shape[channel_dim]
    mean = x.sum(dim=dims, keepdim=True) / count
    mean_square = torch.linalg.vector_norm(x, dim=dims, keepdim=True).square_() / count
    return mean, (mean_square - mean * mean).clamp_(min=0.0)


def balancer_direction(
    x: torch.Tensor, channel_dim: int, min_mean: float, max_mean: float, min_rms: float, max_rms: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The gradient of the Balancer's per-channel constraint loss w.r.t. ``x``, rescaled to unit RMS per channel, as
    ``offset + slope * x`` with per-channel ``offset`` and ``slope``.

    Per channel c (statistics over every other axis): ``m = mean / std``,
    ``loss_c = |m - clamp(m, min_mean, max_mean)| + |log(clamp(rms, min_rms, max_rms) / rms)|``.
    The loss reads ``x`` only through each channel's mean and variance, so its gradient is affine in ``x``:
    ``d loss / d x = (L_mean - 2 L_var mean) / N + (2 L_var / N) x`` over the N elements of a channel, with
    ``L_mean``, ``L_var`` its partial derivatives, and the mean square of that gradient is
    ``(offset + slope mean)^2 + slope^2 var``. Two reductions over ``x`` for the statistics give everything, where
    differentiating the loss through ``x`` (icefall's formulation, tested against) takes about ten.

    Args:
        x: activations of any shape, channel axis ``channel_dim``.

    Returns:
        ``(offset, slope)``: float32, shaped like ``x`` with every axis but the channel axis of size 1.
    """
    count = x.numel() // x.shape[channel_dim]
    mean, var = channel_mean_and_variance(x.detach().float(), channel_dim)
    with torch.enable_grad():
        mean.requires_grad_(True)
        var.requires_grad_(True)
        std = var.clamp(min=1e-20).sqrt()
        rms = (var + mean * mean).clamp(min=1e-20).sqrt()
        ratio = mean / std
        loss = (ratio - ratio.clamp(min=min_mean, max=max_mean)).abs()
        loss = loss + (rms.clamp(min=min_rms, max=max_rms) / rms).log().abs()
        loss_mean, loss_var = torch.autograd.grad(loss.sum(), (mean, var))
    mean, var = mean.detach(), var.detach()
    slope = 2.0 * loss_var / count
    offset = loss_mean / count - slope * mean
    grad_rms = ((offset + slope * mean).square() + slope.square() * var).sqrt().clamp(min=1e-20)
    return offset / grad_rms, slope / grad_rms


class _BalancerFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, channel_dim, min_mean, max_mean, min_rms, max_rms, grad_scale):
        ctx.save_for_backward(x)
        ctx.config = (channel_dim, min_mean, max_mean, min_rms, max_rms, grad_scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, x_grad):
        (x,) = ctx.saved_tensors
        channel_dim, min_mean, max_mean, min_rms, max_rms, grad_scale = ctx.config
        with torch.autocast(x.device.type, enabled=False):
            offset, slope = balancer_direction(x, channel_dim, min_mean, max_mean, min_rms, max_rms)
            edited = _edited_gradient(x_grad, x, grad_scale * offset, grad_scale * slope, channel_dim)
        return edited.to(x_grad.dtype), None, None, None, None, None, None


SLICE_ELEMENTS = 1 << 20  # elements per slice of _edited_gradient's temporaries (4 MB in float32)


def _edited_gradient(
    x_grad: torch.Tensor, x: torch.Tensor, offset: torch.Tensor, slope: torch.Tensor, channel_dim: int
) -> torch.Tensor:
    """``x_grad + |x_grad| * (offset + slope * x)`` in float32, computed in slices of channels.

    ``|x_grad|`` is a per-element estimate of how much an activation matters; the constraint gradient is scaled by it
    so that the correction stays a fixed fraction (folded into ``offset`` and ``slope``) of the real gradient. Done
    in slices of about :data:`SLICE_ELEMENTS`, the temporary ``|x_grad|`` never costs a copy of the whole gradient:
    the embed's (2, 384, 1496, 19) balancer at batch 2 x 30 s needed 83 MB for it, in the backward pass's peak.
    """
    edited = torch.empty(x_grad.shape, dtype=torch.float32, device=x_grad.device)
    for part in channel_slices(x.shape[channel_dim], x.numel(), SLICE_ELEMENTS):
        start, width = part.start, part.stop - part.start
        grad = x_grad.narrow(channel_dim, start, width).float()
        out = edited.narrow(channel_dim, start, width)
        part_offset, part_slope = offset.narrow(channel_dim, start, width), slope.narrow(channel_dim, start, width)
        torch.addcmul(part_offset, x.narrow(channel_dim, start, width).float(), part_slope, out=out)
        out.mul_(grad.abs()).add_(grad)
    return edited


class Balancer(nn.Module):
    """Keeps each channel's sign balance and magnitude in range by editing gradients (forward = identity).

    With probability ``prob`` per training forward, the backward pass adds
    ``|g| * grad_scale * d loss / d x`` (normalised to unit RMS per channel) to the incoming gradient ``g``,
    where the loss penalises a channel whose proportion of positive values leaves
    ``[min_positive, max_positive]`` or whose mean absolute value leaves ``[min_abs, max_abs]``.

    Args:
        num_channels: size of the channel axis (checked).
        channel_dim: the channel axis of the input.
        min_positive, max_positive: allowed range of the proportion of positive values.
        min_abs, max_abs: allowed range of the mean absolute value.
        grad_scale: RMS of the correction relative to |gradient|.
        prob: probability of acting on a forward; ``None`` = icefall's schedule 0.5 -> 0.125 over 8000 batches.
    """

    def __init__(
        self,
        num_channels: int,
        channel_dim: int,
        min_positive: FloatLike = 0.05,
        max_positive: FloatLike = 0.95,
        min_abs: FloatLike = 0.2,
        max_abs: FloatLike = 100.0,
        grad_scale: FloatLike = 0.04,
        prob: Optional[FloatLike] = None,
    ):
        super().__init__()
        self.num_channels = num_channels
        self.channel_dim = channel_dim
        self.min_positive = min_positive
        self.max_positive = max_positive
        self.min_abs = min_abs
        self.max_abs = max_abs
        self.grad_scale = grad_scale
        self.prob = ScheduledFloat((0.0, 0.5), (8000.0, 0.125), default=0.4) if prob is None else prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: any shape with ``num_channels`` on ``channel_dim``. Returns x (gradient edited when active)."""
        if not self.training or not x.requires_grad or random.random() >= float(self.prob):
            return x
        channel_dim = self.channel_dim % x.ndim
        if x.shape[channel_dim] != self.num_channels:
            raise ValueError(f"Balancer: expected {self.num_channels} channels on axis {channel_dim}, got {x.shape}")
        return _BalancerFunction.apply(
            x,
            channel_dim,
            _proportion_positive_to_mean(float(self.min_positive)),
            _proportion_positive_to_mean(float(self.max_positive)),
            _abs_to_rms(float(self.min_abs)),
            _abs_to_rms(float(self.max_abs)),
            float(self.grad_scale),
        )


class _ScaleGradFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.alpha, None


def scale_grad(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Identity whose backward multiplies the gradient by ``alpha``."""
    return _ScaleGradFunction.apply(x, alpha)


class ScaleGrad(nn.Module):
    """Module form of :func:`scale_grad`, active in training mode only."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not x.requires_grad:
            return x
        return scale_grad(x, self.alpha)


class _LimitParamValueFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, min_value, max_value):
        ctx.save_for_backward(x)
        ctx.limits = (min_value, max_value)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        min_value, max_value = ctx.limits
        # Below the range a positive gradient (which would lower x under gradient descent) is negated, and above
        # it a negative one; in-range elements are untouched.
        flip = ((grad > 0) & (x < min_value)) | ((grad < 0) & (x > max_value))
        return torch.where(flip, -grad, grad), None, None


def limit_param_value(
    x: torch.Tensor, min_value: float, max_value: float, prob: float = 0.6, training: bool = True
) -> torch.Tensor:
    """Identity on ``x`` (a parameter) whose backward pushes out-of-range elements back, with probability ``prob``."""
    if max_value < min_value:  # checked before the random draw, so a bad range fails every time
        raise ValueError(f"limit_param_value: max_value {max_value} < min_value {min_value}")
    if not training or random.random() >= prob:
        return x
    return _LimitParamValueFunction.apply(x, min_value, max_value)


class _PenalizeAbsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, limit, penalty):
        # the penalty's gradient is penalty * sign(x) where |x| > limit: kept as int8 (1 byte an element, not a copy
        # of x; the attention scores it guards are the largest tensors of Zipformer's layers)
        ctx.save_for_backward(torch.where(x.abs() > limit, x.sign(), 0).to(torch.int8))
        ctx.penalty = penalty
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (direction,) = ctx.saved_tensors
        return grad + ctx.penalty * direction.to(grad.dtype), None, None


def penalize_abs_values_gt(x: torch.Tensor, limit: float, penalty: float) -> torch.Tensor:
    """Identity whose backward adds the gradient of ``penalty * sum(relu(|x| - limit))`` (an auxiliary loss)."""
    return _PenalizeAbsFunction.apply(x, limit, penalty)

