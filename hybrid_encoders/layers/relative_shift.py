"""Relative-offset attention scores read at absolute key positions (the "relative shift" of Transformer-XL style
attention), shared by Zipformer's and the Conformer-style relative attention.

Eager code reads them through a strided view (no copy). Exported graphs cannot: an exported ``as_strided`` becomes a
Gather with an index tensor as large as the scores. There :func:`relative_scores` computes the product one column
wider than needed (a spare zero column of the small encodings, never read), so that the shift is a contiguous slice
and a column slice of it, with no pad of the large product.

Zipformer's positional queries are only a few channels wide, so the product with all K + T - 1 offsets is cheap to
compute but as large as two score tensors: :func:`add_relative_scores` adds it to the scores block of queries by
block, forward and backward, and never holds it whole.
"""

from typing import Iterator, Tuple

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


def _query_blocks(frames: int, keys: int, block: int) -> Iterator[Tuple[int, int, slice]]:
    """``(start, stop, columns)`` for blocks of ``block`` queries: queries [start, stop) of T read offsets
    ``-(K - T + stop - 1) .. T - 1 - start``, the encodings' columns ``columns`` (K + stop - start - 1 of them)."""
    for start in range(0, frames, block):
        stop = min(start + block, frames)
        yield start, stop, slice(frames - stop, keys + frames - 1 - start)


def add_relative_scores_(scores: torch.Tensor, p: torch.Tensor, positions: torch.Tensor, block: int = 256) -> None:
    """``scores += relative_scores(p, positions)`` in place, one block of queries at a time, without a gradient.

    Args:
        scores: (B, H, T, K) content scores of the last T of K key frames.
        p: (B, H, T, dp) positional queries.
        positions: (H, dp, K + T - 1) projected encodings, column k for offset ``k - (K - 1)``.
        block: queries per block.
    """
    frames, keys = scores.shape[-2:]
    for start, stop, columns in _query_blocks(frames, keys, block):
        wide = torch.matmul(p[..., start:stop, :], positions[..., columns])  # (B, H, rows, K + rows - 1)
        scores[..., start:stop, :].add_(relative_to_absolute(wide))


class _AddRelativeScores(torch.autograd.Function):
    """In-place ``scores += relative_scores(p, positions)`` (when ``active``) by blocks of queries; backward by blocks
    too."""

    @staticmethod
    def forward(ctx, scores, p, positions, active, block):
        ctx.save_for_backward(p, positions)
        ctx.active, ctx.block = active, block
        ctx.mark_dirty(scores)
        if active:
            with torch.no_grad():
                add_relative_scores_(scores, p, positions, block)
        return scores

    @staticmethod
    def backward(ctx, grad):
        p, positions = ctx.saved_tensors
        if not ctx.active:
            return grad, torch.zeros_like(p), torch.zeros_like(positions), None, None
        batch, heads, frames, keys = grad.shape
        grad_p = torch.empty_like(p)
        # summed over blocks: in float32 at least (bf16 / fp16 under autocast)
        accumulate = torch.promote_types(positions.dtype, torch.float32)
        grad_positions = torch.zeros(positions.shape, dtype=accumulate, device=positions.device)
        wide = None  # (H, B, rows, K + rows - 1): the band is rewritten for every block, the rest stays 0
        for start, stop, columns in _query_blocks(frames, keys, ctx.block):
            rows = stop - start
            if wide is None or wide.size(2) != rows:
                wide = grad.new_zeros(heads, batch, rows, keys + rows - 1)
            relative_to_absolute(wide).copy_(grad[..., start:stop, :].transpose(0, 1))
            flat = wide.view(heads, batch * rows, -1)  # (H, B rows, K + rows - 1)
            # (H, B rows, dp) -> (B, H, rows, dp)
            grad_p[..., start:stop, :] = torch.matmul(flat, positions[..., columns].transpose(-2, -1)).view(
                heads, batch, rows, -1
            ).transpose(0, 1)
            queries = p[..., start:stop, :].permute(1, 3, 0, 2).reshape(heads, -1, batch * rows)  # (H, dp, B rows)
            grad_positions[..., columns] += torch.matmul(queries, flat)
        return grad, grad_p, grad_positions.to(positions.dtype), None, None


def add_relative_scores(
    scores: torch.Tensor, p: torch.Tensor, positions: torch.Tensor, active: bool = True, block: int = 256
) -> torch.Tensor:
    """``scores + relative_scores(p, positions)``, written into ``scores``, differentiable.

    The (B, H, T, K + T - 1) product of every query with every offset is never formed: each block of ``block``
    queries takes the K + block - 1 offsets it reads, forward and backward, so the largest temporary is a block's.
    ``active=False`` adds nothing and gives ``p`` and ``positions`` zero gradients (a skipped term).

    Args:
        scores: (B, H, T, K) content scores of the last T of K key frames (modified in place, returned).
        p: (B, H, T, dp) positional queries.
        positions: (H, dp, K + T - 1) projected encodings, column k for offset ``k - (K - 1)``.
        active: add the term (False: a skipped term, kept in the graph with zero gradients).
        block: queries per block.

    Returns:
        ``scores``, now the sum, as the output of an autograd function (gradient: identity for ``scores``).
    """
    return _AddRelativeScores.apply(scores, p, positions, bool(active), block)
