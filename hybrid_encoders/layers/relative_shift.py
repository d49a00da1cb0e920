"""Relative-offset attention scores read at absolute key positions (the "relative shift" of Transformer-XL style
attention), shared by Zipformer's and the Conformer-style relative attention.

Eager code reads them through a strided view (no copy); exported graphs use pad, reshape and slice, because an
exported ``as_strided`` becomes a Gather with an index tensor as large as the scores.
"""

import torch
from torch import nn

from hybrid_encoders.layers.export_mode import is_exporting


def relative_to_absolute(scores: torch.Tensor) -> torch.Tensor:
    """Read relative-offset scores at absolute key positions, without copying.

    The T queries are the last T of K >= T keys (K > T when cached frames of a streaming left context come first).

    Args:
        scores: (..., T, K + T - 1) contiguous, column k holding offset ``k - (K - 1)`` (key minus query position).

    Returns:
        (..., T, K) strided view with ``out[..., i, j] = scores[..., i, (T - 1) + j - i]``.
    """
    if is_exporting():
        return _relative_to_absolute_by_reshape(scores)
    *lead, frames, width = scores.shape
    strides = scores.stride()
    return scores.as_strided(
        (*lead, frames, width - frames + 1), (*strides[:-2], strides[-2] - 1, 1), scores.storage_offset() + frames - 1
    )


def _relative_to_absolute_by_reshape(scores: torch.Tensor) -> torch.Tensor:
    """:func:`relative_to_absolute` with pad, reshape and slice, for exported graphs (an exported ``as_strided``
    becomes a Gather with a (B, H, T, K) index tensor, a fifth of onnxruntime's time at 30 s).

    With one zero column appended, rows are W + 1 long; read flat from element T - 1 in rows of W, row i starts at
    its column T - 1 - i: ``out[i, j] = flat[i W + T - 1 + j] = padded[i, T - 1 + j - i]``.
    """
    *lead, frames, width = scores.shape
    flat = nn.functional.pad(scores, (0, 1)).reshape(*lead, frames * (width + 1))
    rows = flat[..., frames - 1 : frames - 1 + frames * width].reshape(*lead, frames, width)
    return rows[..., : width - frames + 1]
