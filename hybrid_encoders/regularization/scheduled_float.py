"""ScheduledFloat: a float that is piecewise-linear in the training batch count (icefall's schedules, spec §6.1)."""

from typing import Optional, Tuple, Union

from torch import nn


class ScheduledFloat(nn.Module):
    """A float-like value that follows a piecewise-linear schedule over the batch count while training.

    ``float(schedule)`` is the interpolated value at ``batch_count`` in training mode (clamped to the first / last
    value outside the breakpoints), and ``default`` in eval mode or before any batch count has been set. The owning
    encoder writes ``batch_count`` into every ScheduledFloat below it before each training forward.

    It is an ``nn.Module`` so that ``train()`` / ``eval()`` reach it; it has no parameters or buffers.

    Args:
        *points: ``(batch_count, value)`` pairs with strictly increasing batch counts.
        default: the value in eval mode or while ``batch_count`` is unset.
    """

    def __init__(self, *points: Tuple[float, float], default: float = 0.0):
        super().__init__()
        if not points:
            raise ValueError("ScheduledFloat needs at least one (batch_count, value) point")
        xs = [float(x) for x, _ in points]
        if any(b <= a for a, b in zip(xs, xs[1:])):
            raise ValueError(f"ScheduledFloat: batch counts must increase strictly, got {xs}")
        self.points = tuple((float(x), float(y)) for x, y in points)
        self.default = float(default)
        self.batch_count: Optional[float] = None

    def value_at(self, batch_count: float) -> float:
        """The schedule's value at ``batch_count``."""
        (x0, y0), (xn, yn) = self.points[0], self.points[-1]
        if batch_count <= x0:
            return y0
        if batch_count >= xn:
            return yn
        for (xa, ya), (xb, yb) in zip(self.points, self.points[1:]):
            if batch_count <= xb:
                return ya + (yb - ya) * (batch_count - xa) / (xb - xa)
        return yn

    def __float__(self) -> float:
        if self.training and self.batch_count is not None:
            return self.value_at(self.batch_count)
        return self.default

    def extra_repr(self) -> str:
        return f"points={self.points}, default={self.default}"


FloatLike = Union[float, ScheduledFloat]


def whitening_schedule(limit: float, ratio: float = 2.0) -> ScheduledFloat:
    """icefall's whitening-limit schedule: ``limit`` at batch 0 rising to ``ratio * limit`` at batch 20000."""
    return ScheduledFloat((0.0, limit), (20000.0, ratio * limit), default=limit)
