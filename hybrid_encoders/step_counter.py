"""Counting optimizer steps from inside a model.

ESPnet's trainer never tells a model the training step, yet Zipformer's schedules and the pruned RNN-T warm-up
follow it. A model therefore keeps the count itself, in an int64 buffer (saved with checkpoints, never cast by
``model.to(dtype)``), and an :class:`OptimizerStepCounter` advances it.

An optimizer step updates parameters in place, which bumps their tensor version counters. So an observation that
sees changed versions knows that exactly one step happened since the previous observation: forwards within one
gradient-accumulation cycle (``accum_grad``) see unchanged parameters and do not count, nor do steps a gradient
scaler skipped, nor steps of an optimizer over other parameters. The count read by a training forward is the number
of steps taken before it (icefall's ``batch_idx_train`` convention).

Observations happen at every training forward and, once :meth:`OptimizerStepCounter.attach` has hooked the owning
module, whenever its ``state_dict()`` is taken. The second kind makes checkpoints exact: the step that follows an
epoch's last forward is already in the saved count, so a process resumed from that checkpoint (whose first forward
can only start observing) continues with the count an uninterrupted run has. Loading a state dict restarts the
observation, since loading writes the parameters in place.

Under DistributedDataParallel only rank 0 takes state dicts (ESPnet), and DDP copies rank 0's buffers to every rank
before each forward. The count is therefore carried from one observation to the next in the counter itself, not
re-read from the buffer: every rank then writes the same number.
"""

from typing import Iterable, Optional

import torch
from torch import nn


class OptimizerStepCounter:
    """Keeps an int64 step-count buffer equal to the number of optimizer steps applied to the watched parameters."""

    def __init__(self):
        self._versions: Optional[int] = None
        self._count = 0

    def advance(self, count: torch.Tensor, parameters: Iterable[torch.Tensor]) -> int:
        """Observe: count one step if the parameters changed in place since the previous observation.

        The first observation (of a process, or after :meth:`forget`) takes ``count`` as it is.

        Args:
            count: the int64 scalar buffer holding the count, updated in place.
            parameters: the parameters an optimizer step would update (the model's own).

        Returns:
            the count after this observation.
        """
        versions = sum(p._version for p in parameters)
        if self._versions is None:
            self._count = int(count)
        elif versions != self._versions:
            self._count += 1
            count.fill_(self._count)
        self._versions = versions
        return self._count

    def settle(self, count: torch.Tensor, parameters: Iterable[torch.Tensor]) -> None:
        """Count a step taken since the last observation, without starting to observe (a state-dict save).

        Args:
            count, parameters: as in :meth:`advance`.
        """
        if self._versions is not None:
            self.advance(count, parameters)

    def __getstate__(self) -> dict:
        # a copy (deepcopy, pickle) watches new tensors, whose version counters start afresh
        return {**self.__dict__, "_versions": None}

    def forget(self) -> None:
        """Treat the next observation as the first (after loading a state dict or changing the count by hand)."""
        self._versions = None

    def attach(self, module: nn.Module, buffer_name: str) -> None:
        """Observe ``module``'s parameters whenever its state dict is taken, and forget whenever one is loaded.

        The hooks are bound methods of this counter, so a deep copy of ``module`` gets hooks of its own copy.

        Args:
            module: the module that owns the count buffer and whose parameters the optimizer updates.
            buffer_name: name of the int64 scalar buffer of ``module``.
        """
        self._buffer_name = buffer_name
        module.register_state_dict_pre_hook(self._before_state_dict)
        module.register_load_state_dict_post_hook(self._after_load)

    def _before_state_dict(self, module: nn.Module, prefix: str, keep_vars: bool) -> None:
        self.settle(getattr(module, self._buffer_name), module.parameters())

    def _after_load(self, module: nn.Module, incompatible_keys) -> None:
        self.forget()
