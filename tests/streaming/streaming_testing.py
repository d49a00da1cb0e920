"""Helpers of the streaming tests: random chunkings and tiny model parts."""

from typing import List

import numpy as np
import torch


def random_splits(total: int, rng: np.random.Generator, largest: int = 7) -> List[int]:
    """Boundaries 0 = s_0 < s_1 < ... = total of random pieces of 1..largest frames."""
    bounds = [0]
    while bounds[-1] < total:
        bounds.append(min(total, bounds[-1] + int(rng.integers(1, largest + 1))))
    return bounds


def advance_in_pieces(search, encoder_out: torch.Tensor, lengths: torch.Tensor, bounds: List[int]):
    """Feed ``encoder_out`` (B, T, D) to ``search`` piece by piece; per stream a piece holds its valid frames only."""
    for start, stop in zip(bounds[:-1], bounds[1:]):
        piece_lengths = (lengths - start).clamp(min=0, max=stop - start)
        search.advance(encoder_out[:, start:stop], piece_lengths)
    return search


def peaky_encoder_out(batch: int, frames: int, dim: int, seed: int) -> torch.Tensor:
    """Random encoder frames, scaled so that the posteriors of a random output layer are far from uniform."""
    return torch.randn(batch, frames, dim, generator=torch.Generator().manual_seed(seed)) * 3.0
