"""Eden and Eden2 learning-rate schedules (Zipformer paper, section "Eden"; icefall ``zipformer/optim.py``).

For optimizer step ``b`` (counted from 1, as icefall counts batches) after ``e`` completed epochs::

    Eden:  lr = base_lr · ((b² + lr_batches²) / lr_batches²)^(-1/4) · ((e² + lr_epochs²) / lr_epochs²)^(-1/4) · w(b)
    Eden2: lr = base_lr · ((b² + lr_batches²) / lr_batches²)^(-1/2) · w(b)
    w(b) = warmup_start + (1 - warmup_start) · b / warmup_batches   if b < warmup_batches, else 1

``base_lr`` is each parameter group's ``lr`` when the scheduler is built (ESPnet's ``optim_conf.lr``).

ESPnet's trainer calls ``scheduler.step()`` after every optimizer step (:class:`AbsBatchStepScheduler`) and, for
:class:`AbsValEpochStepScheduler`, ``scheduler.step(validation_value)`` after every epoch, so the counters are
"optimizer steps taken" and "epochs completed". The learning rate set after ``k`` steps is the one for step
``b = k + 1``: the first step uses ``b = 1`` and epoch 0, exactly as icefall's training loop (which sets the batch
index before its optimizer step and the epoch to ``epoch - 1`` at the start of each 1-based epoch).
"""

from typing import List, Optional, Union

import torch
from espnet2.schedulers.abs_scheduler import AbsBatchStepScheduler, AbsValEpochStepScheduler

from hybrid_encoders.encoders.config import require_positive

Number = Union[int, float]


class _EdenBase:
    """Shared bookkeeping: base learning rates, the optimizer-step count, warm-up, and writing ``group["lr"]``.

    Args:
        optimizer: the optimizer whose groups' ``lr`` is scheduled.
        lr_batches: batches after which the learning rate decays noticeably (> 0).
        warmup_batches: length of the linear warm-up in optimizer steps (>= 0; 0 disables it).
        warmup_start: warm-up factor at step 0, in [0, 1].
    """

    name = "eden"

    def __init__(self, optimizer: torch.optim.Optimizer, lr_batches: Number, warmup_batches: Number, warmup_start: float):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{self.name}: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        require_positive(self.name, "lr_batches", lr_batches)
        if not warmup_batches >= 0:
            raise ValueError(f"{self.name}: warmup_batches must be >= 0, got {warmup_batches!r}")
        if not 0.0 <= warmup_start <= 1.0:
            raise ValueError(f"{self.name}: warmup_start must be in [0, 1], got {warmup_start!r}")
        for index, group in enumerate(optimizer.param_groups):
            require_positive(self.name, f"lr of parameter group {index}", group["lr"])
        self.optimizer = optimizer
        self.lr_batches = lr_batches
        self.warmup_batches = warmup_batches
        self.warmup_start = warmup_start
        # Not saved by state_dict(): on resume, the configured lr wins (as in icefall).
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.batch = 0
        self._set_lrs()

    def warmup(self, batch: Number) -> float:
        """The warm-up factor ``w(batch)``."""
        if batch >= self.warmup_batches:
            return 1.0
        return self.warmup_start + (1.0 - self.warmup_start) * batch / self.warmup_batches

    def factor(self, batch: Number) -> float:
        """The learning-rate factor of optimizer step ``batch`` (1-based) in the current epoch."""
        raise NotImplementedError

    def step_batch(self, batch: Optional[int] = None):
        """Count one optimizer step (or set the number of steps taken to ``batch``) and update the learning rates."""
        self.batch = self.batch + 1 if batch is None else batch
        self._set_lrs()

    def get_last_lr(self) -> List[float]:
        """The learning rate of each parameter group, as set for the next optimizer step."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def _set_lrs(self):
        if len(self.optimizer.param_groups) != len(self.base_lrs):
            raise ValueError(
                f"{self.name}: the optimizer has {len(self.optimizer.param_groups)} parameter groups but the scheduler "
                f"was built for {len(self.base_lrs)}; build the scheduler after adding all groups"
            )
        factor = self.factor(self.batch + 1)
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base_lr * factor

    def _load_counters(self, state: dict, keys):
        missing = [key for key in keys if key not in state]
        if missing:
            raise ValueError(f"{self.name}: scheduler state lacks {', '.join(missing)}; it is not an {self.name} state")
        for key in keys:
            setattr(self, key, state[key])
        self._set_lrs()


class Eden(_EdenBase, AbsBatchStepScheduler, AbsValEpochStepScheduler):
    """Eden (``scheduler: eden``): decays with both the optimizer-step count and the completed epochs.

    Defaults are those of icefall's ``zipformer/train.py`` (lr_batches 7500, lr_epochs 3.5, warm-up from 0.1 over
    500 steps; icefall's class default warm-up start is 0.5, but its Zipformer recipe passes 0.1).

    Args:
        optimizer: the optimizer (ScaledAdam's ``lr`` 0.045 in the recipe).
        lr_batches: steps after which the learning rate decays noticeably (> 0).
        lr_epochs: epochs after which the learning rate decays noticeably (> 0).
        warmup_batches: length of the linear warm-up in optimizer steps (>= 0).
        warmup_start: warm-up factor at step 0, in [0, 1].
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr_batches: Number = 7500,
        lr_epochs: Number = 3.5,
        warmup_batches: Number = 500,
        warmup_start: float = 0.1,
    ):
        require_positive(self.name, "lr_epochs", lr_epochs)
        self.lr_epochs = lr_epochs
        self.epoch = 0
        super().__init__(optimizer, lr_batches, warmup_batches, warmup_start)

    def factor(self, batch: Number, epoch: Optional[Number] = None) -> float:
        """The learning-rate factor of optimizer step ``batch`` (1-based) after ``epoch`` completed epochs
        (default: the current count)."""
        epoch = self.epoch if epoch is None else epoch
        batch_decay = ((batch**2 + self.lr_batches**2) / self.lr_batches**2) ** -0.25
        epoch_decay = ((epoch**2 + self.lr_epochs**2) / self.lr_epochs**2) ** -0.25
        return batch_decay * epoch_decay * self.warmup(batch)

    def step(self, val=None, epoch: Optional[int] = None):
        """ESPnet's two calls: ``step()`` after each optimizer step, ``step(val)`` at the end of each epoch.

        Args:
            val: the validation value ESPnet passes at the end of an epoch; it only marks the call as per-epoch.
            epoch: set the number of completed epochs to this instead of counting one more.
        """
        if val is None and epoch is None:
            self.step_batch()
        else:
            self.step_epoch(epoch)

    def step_epoch(self, epoch: Optional[int] = None):
        """Count one completed epoch (or set the count to ``epoch``) and update the learning rates."""
        self.epoch = self.epoch + 1 if epoch is None else epoch
        self._set_lrs()

    def state_dict(self) -> dict:
        return {"batch": self.batch, "epoch": self.epoch}

    def load_state_dict(self, state: dict):
        self._load_counters(state, ("batch", "epoch"))

    def __repr__(self):
        return (
            f"Eden(lr_batches={self.lr_batches}, lr_epochs={self.lr_epochs}, warmup_batches={self.warmup_batches}, "
            f"warmup_start={self.warmup_start})"
        )


class Eden2(_EdenBase, AbsBatchStepScheduler):
    """Eden2 (``scheduler: eden2``): Eden without the epoch term, with a steeper step decay (power -1/2).

    Args:
        optimizer: the optimizer.
        lr_batches: steps after which the learning rate decays noticeably (> 0).
        warmup_batches: length of the linear warm-up in optimizer steps (>= 0).
        warmup_start: warm-up factor at step 0, in [0, 1]; 0.1 like :class:`Eden` (icefall's class default is 0.5).
    """

    name = "eden2"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr_batches: Number = 7500,
        warmup_batches: Number = 500,
        warmup_start: float = 0.1,
    ):
        super().__init__(optimizer, lr_batches, warmup_batches, warmup_start)

    def factor(self, batch: Number) -> float:
        return ((batch**2 + self.lr_batches**2) / self.lr_batches**2) ** -0.5 * self.warmup(batch)

    def step(self, epoch: Optional[int] = None):
        """ESPnet's per-optimizer-step call; ``epoch``, if given, sets the number of steps taken (torch's legacy
        meaning of the argument)."""
        self.step_batch(epoch)

    def state_dict(self) -> dict:
        return {"batch": self.batch}

    def load_state_dict(self, state: dict):
        self._load_counters(state, ("batch",))

    def __repr__(self):
        return f"Eden2(lr_batches={self.lr_batches}, warmup_batches={self.warmup_batches}, warmup_start={self.warmup_start})"
