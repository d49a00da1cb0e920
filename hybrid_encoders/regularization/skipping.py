"""Random skipping and masking used while training Zipformer (spec §5.1, §6.2).

* :func:`sequence_keep_mask` / :func:`sequence_dropout`: drop a module's output for whole sequences, no rescaling
  (attention / convolution / feed-forward skip; the layer skip lives in the bypass).
* :class:`SharedDropout`: dropout whose mask is shared along one axis (icefall's Dropout3), probability schedulable.
* :func:`feature_masks`: per-sequence masks zeroing the upper channels of every stack ("feature masking").

All return their input unchanged (or ``None`` masks) outside training, so inference pays nothing.
"""

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from hybrid_encoders.layers.lean_autograd import dropout_mask
from hybrid_encoders.regularization.scheduled_float import FloatLike


def sequence_keep_mask(x: torch.Tensor, rate: float, training: bool) -> Optional[torch.Tensor]:
    """A (B, 1, 1) 0/1 mask keeping each sequence of the batch-first ``x`` with probability ``1 - rate``.

    Returns None (nothing to do) outside training or when ``rate == 0``.
    """
    if not training or rate == 0.0:
        return None
    return (torch.rand(x.size(0), 1, 1, device=x.device) > rate).to(x.dtype)


def sequence_dropout(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Zero whole sequences of a batch-first (B, T, C) module output with probability ``rate`` (no rescaling)."""
    mask = sequence_keep_mask(x, rate, training)
    return x if mask is None else x * mask


class SharedDropout(nn.Module):
    """Inverted dropout whose mask is shared along ``shared_dim`` (e.g. the time axis: one mask per sequence).

    Args:
        p: drop probability, a float or a ScheduledFloat.
        shared_dim: axis along which the mask is broadcast.
    """

    def __init__(self, p: FloatLike, shared_dim: int):
        super().__init__()
        self.p = p
        self.shared_dim = shared_dim

    def keep_mask(self, x: torch.Tensor) -> Tuple[Optional[torch.Tensor], float]:
        """``(keep, keep_scale)`` for ``x``: a bool mask of size 1 along ``shared_dim`` and ``1 / (1 - p)``;
        ``(None, 1.0)`` outside training or when ``p == 0``."""
        p = float(self.p)
        if not self.training or p == 0.0:
            return None, 1.0
        return dropout_mask(x, p, self.shared_dim), 1.0 / (1.0 - p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, keep_scale = self.keep_mask(x)
        return x if keep is None else x * (keep.to(x.dtype) * keep_scale)


def feature_masks(
    batch_size: int,
    dims: Sequence[int],
    unmasked_dims: Sequence[int],
    prob: float,
    device: torch.device,
    dtype: torch.dtype,
) -> List[torch.Tensor]:
    """Zipformer's per-sequence feature masks (icefall ``get_feature_masks``), one (B, 1, C_i) mask per stack.

    Two nested per-sequence draws: mask1 keeps a sequence with probability ``1 - prob``, mask2 additionally needs a
    second such draw. For stack i with ``u1 = unmasked_dims[i]``, ``u2 = u1 + (C_i - u1) // 2``, channels
    ``[u1, u2)`` are multiplied by mask1 and ``[u2, C_i)`` by mask2; the same draws serve every stack so that the
    masked channels agree across the whole encoder.
    """
    mask1 = (torch.rand(batch_size, 1, 1, device=device) > prob).to(dtype)
    mask2 = mask1 * (torch.rand(batch_size, 1, 1, device=device) > prob).to(dtype)
    masks = []
    for dim, unmasked in zip(dims, unmasked_dims):
        middle = unmasked + (dim - unmasked) // 2
        mask = torch.ones(batch_size, 1, dim, device=device, dtype=dtype)
        mask[:, :, unmasked:middle] = mask1
        mask[:, :, middle:] = mask2
        masks.append(mask)
    return masks
