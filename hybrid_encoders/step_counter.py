"""Counting optimizer steps from inside a model.

ESPnet's trainer never tells a model the training step, yet Zipformer's schedules and the pruned RNN-T warm-up
follow it. A model therefore keeps the count itself, in an int64 buffer (saved with checkpoints, never cast by
``model.to(dtype)``), and advances it with an :class:`OptimizerStepCounter` at the start of each training forward.

An optimizer step updates parameters in place, which bumps their tensor version counters. So a forward that sees
changed versions knows that exactly one step happened since the previous forward: forwards within one
gradient-accumulation cycle (``accum_grad``) see unchanged parameters and do not count, nor do steps a gradient
scaler skipped, nor steps of an optimizer over other parameters. The count is the number of steps taken before the
current forward (icefall's ``batch_idx_train`` convention); the first forward of a process only records the versions.
"""

from typing import Iterable, Optional

import torch


class OptimizerStepCounter:
    """Advances a step-count buffer when the watched parameters changed in place since the previous call."""

    def __init__(self):
        self._versions: Optional[int] = None

    def advance(self, count: torch.Tensor, parameters: Iterable[torch.Tensor]) -> None:
        """Add 1 to ``count`` (an int64 scalar buffer) if an optimizer step happened since the previous call.

        Args:
            count: the buffer to advance, in place.
            parameters: the parameters an optimizer step would update (the model's own).
        """
        versions = sum(p._version for p in parameters)
        if self._versions is not None and versions != self._versions:
            count.add_(1)
        self._versions = versions

    def forget(self) -> None:
        """Treat the next call as the first (after loading a state dict or changing the count by hand)."""
        self._versions = None
