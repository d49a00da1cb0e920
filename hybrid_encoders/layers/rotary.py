"""Rotary positional embedding (RoPE, Su et al. 2021, arXiv 2104.09864 §3.2) for HybridFormer's linear attention.

Conventions follow the HybridFormer authors' ``rotary_embedding.py`` (see docs/hybridformer.md):

* pairs are interleaved (GPT-J style): channels ``(2i, 2i+1)`` rotate together by the angle ``pos * theta^(-2i/r)``;
* only the first ``r = rope_dim`` channels rotate, the rest pass through unchanged (partial rotation);
* positions are the frame indices ``0 .. T-1`` of the sequence axis (no offset: offline, whole-utterance encoding).

Because ``R_m`` is a rotation, ``<R_m q, R_n k>`` depends on ``m - n`` only, which is how linear attention gets
relative-position information without a ``T x T`` score matrix.
"""

import math
from typing import Tuple

import torch
from torch import nn

from hybrid_encoders.layers.export_mode import is_exporting

# Exported graphs compute the phase in fixed point: turns of 2**-40, exact int64 products up to 2**23 frames.
_PHASE_BITS = 40


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
        cos, sin = self._rotations(x.size(-2), x.device, x.dtype)
        rotated, passed = x[..., : self.rope_dim], x[..., self.rope_dim :]
        pairs = rotated.unflatten(-1, (self.rope_dim // 2, 2))
        even, odd = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)
        return torch.cat((rotated, passed), dim=-1)

    def _rotations(self, length: int, device: torch.device, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of the angles ``t * theta^(-2i/r)``, each (T, r/2) in ``dtype``.

        Eager: the angles in float64 (not a float32 buffer): at t ~ 1500 a float32 angle is off by ~1e-4 rad, which
        would break the exact dependence on m - n. Exported graphs hold no float64 operator (ONNX runtimes such as
        the one sherpa-onnx ships have no float64 Cos): the phase is reduced modulo one turn exactly in int64 fixed
        point and only the reduced angle, in [0, 2 pi), becomes float32 (error < 4e-7 rad at any length).
        """
        frequencies = [self.theta ** (-i / self.rope_dim) for i in range(0, self.rope_dim, 2)]  # RoFormer eq. 15
        if is_exporting():
            turns = torch.tensor([round(f / (2 * math.pi) * 2**_PHASE_BITS) for f in frequencies], device=device)
            positions = torch.arange(length, device=device, dtype=torch.int64)
            phase = torch.outer(positions, turns) % 2**_PHASE_BITS
            angles = phase.to(torch.float32) * (2 * math.pi / 2**_PHASE_BITS)
        else:
            positions = torch.arange(length, device=device, dtype=torch.float64)
            angles = torch.outer(positions, torch.tensor(frequencies, device=device, dtype=torch.float64))
        return angles.cos().to(dtype), angles.sin().to(dtype)
