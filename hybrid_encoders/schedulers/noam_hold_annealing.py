"""NoamHoldAnnealing: the learning-rate schedule of the Squeezeformer paper (linear warm-up, hold, polynomial decay),
with the formula of NeMo's and WeNet's ``NoamHoldAnnealing`` (``scheduler: noam_hold_annealing``).

With peak learning rate ``lr`` (the optimizer's), warm-up W, hold H, decay rate d and the step s (0 for the first
optimizer update):

    s <= W:            lr * (s + 1) / (W + 1)
    W <= s < W + H:    lr
    s >= W + H:        max(min_lr, lr * max(1, W^d) / max(1, (s - H)^d))     (= lr at s = W + H)
    s > max_steps:     min_lr

d = 0.5 is the Noam decay; Squeezeformer uses d = 1.0 with a long hold (NeMo recipe: W = 5000, H = 40000,
min_lr = 1e-5). All step counts are given absolutely (NeMo's ``*_ratio`` variants need the total, which ESPnet's
scheduler does not know).
"""

import math
from typing import Optional

import torch
from espnet2.schedulers.abs_scheduler import AbsBatchStepScheduler
from torch.optim.lr_scheduler import LRScheduler


def noam_hold_annealing_lr(
    peak_lr: float, step: int, warmup_steps: int, hold_steps: int, decay_rate: float, min_lr: float, max_steps: float
) -> float:
    """The schedule's learning rate at ``step`` (see the module docstring)."""
    if step <= warmup_steps:
        return peak_lr * (step + 1) / (warmup_steps + 1)
    if step < warmup_steps + hold_steps:
        return peak_lr
    if step > max_steps:
        return min_lr
    decayed = peak_lr * max(1.0, warmup_steps**decay_rate) / max(1.0, (step - hold_steps) ** decay_rate)
    return max(min_lr, decayed)


def _number(key: str, value) -> float:
    """``value`` as a float; YAML reads ``1e-5`` (no dot) as a string, which is accepted here."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"noam_hold_annealing: {key} must be a number, got {value!r}") from None


class NoamHoldAnnealing(LRScheduler, AbsBatchStepScheduler):
    """Warm-up, hold and polynomial decay, stepped once per optimizer update (ESPnet batch-step scheduler).

    Args:
        optimizer: the optimizer; its learning rate(s) are the peak.
        warmup_steps: W > 0, steps of linear warm-up.
        hold_steps: H >= 0, steps at the peak after the warm-up.
        decay_rate: d > 0, exponent of the decay (1.0 for Squeezeformer, 0.5 = Noam).
        min_lr: floor of the decay, and the learning rate after ``max_steps``.
        max_steps: last step of the decay; None: the decay never stops.
        last_epoch: index of the last step taken (-1 to start fresh; ESPnet resumes through ``load_state_dict``).

    Raises:
        ValueError: an invalid value, naming the key.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 5000,
        hold_steps: int = 40000,
        decay_rate: float = 1.0,
        min_lr: float = 1e-5,
        max_steps: Optional[int] = None,
        last_epoch: int = -1,
    ):
        for key, value, lowest in (("warmup_steps", warmup_steps, 1), ("hold_steps", hold_steps, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                raise ValueError(f"noam_hold_annealing: {key} must be an int >= {lowest}, got {value!r}")
        decay_rate, min_lr = _number("decay_rate", decay_rate), _number("min_lr", min_lr)
        if not decay_rate > 0:
            raise ValueError(f"noam_hold_annealing: decay_rate must be > 0, got {decay_rate!r}")
        if not min_lr >= 0:
            raise ValueError(f"noam_hold_annealing: min_lr must be >= 0, got {min_lr!r}")
        if max_steps is not None and (not isinstance(max_steps, int) or max_steps < warmup_steps + hold_steps):
            raise ValueError(
                f"noam_hold_annealing: max_steps must be an int >= warmup_steps + hold_steps "
                f"({warmup_steps + hold_steps}), got {max_steps!r}"
            )
        self.warmup_steps = warmup_steps
        self.hold_steps = hold_steps
        self.decay_rate = decay_rate
        self.min_lr = min_lr
        self.max_steps = max_steps
        # The base class calls step() (hence get_lr) once, so the fields above must exist first.
        super().__init__(optimizer, last_epoch)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(warmup_steps={self.warmup_steps}, hold_steps={self.hold_steps}, "
            f"decay_rate={self.decay_rate}, min_lr={self.min_lr}, max_steps={self.max_steps})"
        )

    def get_lr(self):
        max_steps = math.inf if self.max_steps is None else self.max_steps
        return [
            noam_hold_annealing_lr(
                peak, self.last_epoch, self.warmup_steps, self.hold_steps, self.decay_rate, self.min_lr, max_steps
            )
            for peak in self.base_lrs
        ]
