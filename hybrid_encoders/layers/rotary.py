"""Rotary positional embedding (RoPE, Su et al. 2021, arXiv 2104.09864 §3.2) for HybridFormer's linear attention.

Conventions follow the HybridFormer authors' ``rotary_embedding.py`` (see docs/hybridformer.md):

* pairs are interleaved (GPT-J style): channels ``(2i, 2i+1)`` rotate together by the angle ``pos * theta^(-2i/r)``;
* only the first ``r = rope_dim`` channels rotate, the rest pass through unchanged (partial rotation);
* positions are the frame indices ``0 .. T-1`` of the sequence axis (no offset: offline, whole-utterance encoding).

Because ``R_m`` is a rotation, ``<R_m q, R_n k>`` depends on ``m - n`` only, which is how linear attention gets
relative-position information without a ``T x T`` score matrix.
"""

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Rotate the first ``rope_dim`` channels of a sequence of vectors by their positions.

    Args:
        rope_dim: number of rotated channels; even and > 0.
        theta: base of the geometric frequency ladder (10000, as in RoFormer and the authors' code).
    """

    def __init__(self, rope_dim: int, theta: float = 10000.0):
        super().__init__()
        if rope_dim <= 0 or rope_dim % 2 != 0:
            raise ValueError(f"RotaryEmbedding: rope_dim must be a positive even number, got {rope_dim}")
        if not theta > 0:
            raise ValueError(f"RotaryEmbedding: theta must be > 0, got {theta}")
        self.rope_dim = rope_dim
        self.theta = float(theta)

    def extra_repr(self) -> str:
        return f"rope_dim={self.rope_dim}, theta={self.theta}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the rotation.

        Args:
            x: (..., T, C) with ``C >= rope_dim``; position ``t`` is the index along the second-to-last axis.

        Returns:
            (..., T, C): channels ``[0, rope_dim)`` rotated pairwise by ``t * frequency``, the rest unchanged.
        """
        if x.size(-1) < self.rope_dim:
            raise ValueError(f"RotaryEmbedding: input has {x.size(-1)} channels, fewer than rope_dim={self.rope_dim}")
        # Angles in float64 (not a float32 buffer): at t ~ 1500 a float32 angle is off by ~1e-4 rad, which would
        # break the exact dependence on m - n. One frequency per pair: theta^(-2i/r) (RoFormer eq. 15).
        pair_index = torch.arange(0, self.rope_dim, 2, device=x.device, dtype=torch.float64)
        frequencies = self.theta ** (-pair_index / self.rope_dim)
        positions = torch.arange(x.size(-2), device=x.device, dtype=torch.float64)
        angles = torch.outer(positions, frequencies)  # (T, r/2)
        cos = angles.cos().to(x.dtype)
        sin = angles.sin().to(x.dtype)
        rotated, passed = x[..., : self.rope_dim], x[..., self.rope_dim :]
        pairs = rotated.unflatten(-1, (self.rope_dim // 2, 2))
        even, odd = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)
        return torch.cat((rotated, passed), dim=-1)
