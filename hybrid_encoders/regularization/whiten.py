"""Whiten: a gradient-only penalty that keeps feature covariances close to a multiple of the identity (spec §6.4)."""

import random
from typing import Tuple, Union

import torch
from torch import nn

from hybrid_encoders.regularization.scheduled_float import FloatLike


def whitening_metric(x: torch.Tensor, num_groups: int) -> torch.Tensor:
    """How far the centred per-group feature covariance is from ``lambda * I`` (same lambda for every group).

    With ``x`` reshaped to (frames, G, C/G) and centred per group, ``cov_g = x_g^T x_g``; the metric is
    ``(sum_g ||cov_g||_F^2 / C) / (mean diag(cov))^2``, which is 1 exactly when every group is white with equal
    traces and larger otherwise.

    Args:
        x: (..., C) features, C divisible by ``num_groups``.

    Returns:
        0-dim tensor.
    """
    return _WhiteningStatistics(x, num_groups).metric


class _WhiteningStatistics:
    """The centred groups, their covariances and the metric of :func:`whitening_metric`, and the metric's gradient.

    Attributes:
        centred: (G, frames, C/G).
        covariance: (G, C/G, C/G).
        mean_diagonal, metric: 0-dim.
    """

    def __init__(self, x: torch.Tensor, num_groups: int):
        self.shape = x.shape
        x = x.reshape(-1, x.shape[-1])
        frames, self.channels = x.shape
        x = x.reshape(frames, num_groups, self.channels // num_groups).transpose(0, 1)  # (G, frames, C/G)
        self.centred = x - x.mean(dim=1, keepdim=True)
        self.covariance = torch.matmul(self.centred.transpose(1, 2), self.centred)
        self.mean_diagonal = torch.diagonal(self.covariance, dim1=1, dim2=2).mean()
        self.denominator = self.mean_diagonal**2 + 1e-20
        self.metric = (self.covariance**2).sum() / self.channels / self.denominator

    def gradient(self) -> torch.Tensor:
        """d metric / d x, shaped like ``x``, in closed form (one matrix product where autograd takes three):
        ``4 / (C (mean_diag^2 + eps)) * x_g (cov_g - metric * mean_diag * I)`` for the centred groups ``x_g``. The
        centring passes it through unchanged: it is a product with the centred ``x_g``, so its mean over frames
        is already zero."""
        identity = torch.eye(self.covariance.shape[-1], dtype=self.covariance.dtype, device=self.covariance.device)
        shifted = self.covariance - (self.metric * self.mean_diagonal) * identity
        grad = torch.matmul(self.centred, shifted) * (4.0 / (self.channels * self.denominator))
        return grad.transpose(0, 1).reshape(self.shape)


class _WhitenFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, module):
        ctx.save_for_backward(x)
        ctx.module = module
        return x.view_as(x)

    @staticmethod
    def backward(ctx, x_grad):
        (x,) = ctx.saved_tensors
        module = ctx.module
        with torch.autocast(x.device.type, enabled=False):
            statistics = _WhiteningStatistics(x.detach().float(), module.num_groups)
            if statistics.metric < float(module.whitening_limit):
                module.prob = module.min_prob  # satisfied: check less often
                return x_grad, None
            module.prob = module.max_prob
            penalty_grad = statistics.gradient()
        # The penalty gradient is rescaled to a fixed fraction of the incoming gradient's norm.
        scale = float(module.grad_scale) * x_grad.float().norm() / (penalty_grad.norm() + 1e-20)
        return x_grad + (penalty_grad * scale).to(x_grad.dtype), None


class Whiten(nn.Module):
    """Identity in the forward pass; when active and the whitening metric exceeds its limit, the backward pass adds
    the metric's gradient, rescaled to ``grad_scale`` times the norm of the incoming gradient.

    It acts with probability ``prob``, which drops to ``min_prob`` after a backward that found the metric under the
    limit and returns to ``max_prob`` otherwise.

    That probability is state outside the state dict. So that a run resumed from a checkpoint whitens exactly like an
    uninterrupted one, every switch to training mode (``train()``, which ESPnet's trainer calls at the start of every
    epoch) restarts it at ``max_prob``, as a freshly started process does; under DDP every rank restarts alike.

    Args:
        num_groups: channel groups whitened separately (with equal traces).
        whitening_limit: metric value (>= 1) tolerated before acting.
        prob: a probability or a ``(min_prob, max_prob)`` pair.
        grad_scale: norm of the penalty gradient relative to the incoming gradient.
    """

    def __init__(
        self,
        num_groups: int,
        whitening_limit: FloatLike,
        prob: Union[float, Tuple[float, float]],
        grad_scale: FloatLike,
    ):
        super().__init__()
        if num_groups < 1:
            raise ValueError(f"Whiten: num_groups must be >= 1, got {num_groups}")
        self.num_groups = num_groups
        self.whitening_limit = whitening_limit
        self.grad_scale = grad_scale
        self.min_prob, self.max_prob = (prob, prob) if isinstance(prob, float) else prob
        self.prob = self.max_prob

    def train(self, mode: bool = True) -> "Whiten":
        if mode:
            self.prob = self.max_prob
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., C). Returns x (gradient edited when active)."""
        if not self.training or not x.requires_grad or random.random() >= self.prob or float(self.grad_scale) == 0:
            return x
        return _WhitenFunction.apply(x, self)
