"""Relative-offset attention scores read at absolute key positions (the "relative shift" of Transformer-XL style
attention), shared by Zipformer's and the Conformer-style relative attention.

Eager code reads them through a strided view (no copy). Exported graphs cannot: an exported ``as_strided`` becomes a
Gather with an index tensor as large as the scores. There :func:`relative_scores` computes the product one column
wider than needed (a spare zero column of the small encodings, never read), so that the shift is a contiguous slice
and a column slice of it, with no pad of the large product.
"""

import torch
from torch import nn

from hybrid_encoders.layers.export_mode import is_exporting


def relative_to_absolute(scores: torch.Tensor) -> torch.Tensor:
    """Read relative-offset scores at absolute key positions, without copying (eager mode).

    The T queries are the last T of K >= T keys (K > T when cached frames of a streaming left context come first).

    Args:
        scores: (..., T, K + T - 1) contiguous, column k holding offset ``k - (K - 1)`` (key minus query position).

    Returns:
        (..., T, K) strided view with ``out[..., i, j] = scores[..., i, (T - 1) + j - i]``.
    """
    *lead, frames, width = scores.shape
    strides = scores.stride()
    return scores.as_strided(
        (*lead, frames, width - frames + 1), (*strides[:-2], strides[-2] - 1, 1), scores.storage_offset() + frames - 1
    )


def relative_scores(queries: torch.Tensor, encodings: torch.Tensor) -> torch.Tensor:
    """Positional attention scores at absolute key positions: the product of each query with the encoding of its
    offset to each key.

    Args:
        queries: (..., T, d) positional queries of the last T of K >= T key frames.
        encodings: (..., d, K + T - 1) projected encodings, column k for offset ``k - (K - 1)`` (key minus query).

    Returns:
        (..., T, K) with ``out[..., i, j] = queries[..., i, :] . encodings[..., :, (T - 1) + j - i]``; a strided view
        in eager mode.
    """
    if not is_exporting():
        return relative_to_absolute(torch.matmul(queries, encodings).contiguous())  # a no-op for matmul's output
    # Rows of W + 1 = K + T columns (the last one spare); read flat from element T - 1 in rows of W, row i starts at
    # its column T - 1 - i: out[i, j] = flat[i W + T - 1 + j] = wide[i, T - 1 + j - i], never the spare column.
    wide = torch.matmul(queries, nn.functional.pad(encodings, (0, 1)))
    *lead, frames, padded_width = wide.shape
    width = padded_width - 1
    flat = wide.reshape(*lead, frames * padded_width)
    rows = flat[..., frames - 1 : frames - 1 + frames * width].reshape(*lead, frames, width)
    return rows[..., : width - frames + 1]
