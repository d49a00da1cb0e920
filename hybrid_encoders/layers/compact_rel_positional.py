"""Zipformer's compact relative positional encoding (spec §4).

For an offset d = key position - query position, with D = embed_dim and L = sqrt(D):

    d_c   = L * sign(d) * (ln(|d| + L) - ln L)          # logarithmic compression of long offsets
    theta = atan(d_c / (length_factor * D / (2 pi)))
    pe[d] = [cos(theta), sin(theta), cos(2 theta), sin(2 theta), ..., cos((D/2) theta), 1.0]

(the last sine is replaced by a constant 1, which lets the projection learn a bias).
"""

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class CompactRelPositionalEncoding(nn.Module):
    """Encodings of the offsets ``-(L + T - 1) .. T - 1`` (ascending), with dropout while training.

    T query frames attend to themselves and, in chunked streaming, to L cached frames before them (key minus query
    position then reaches down to ``-(L + T - 1)``).

    Args:
        embed_dim: encoding size D (even).
        dropout_rate: dropout on the encodings in training.
        length_factor: stretches the offset scale (>= 1).

    Shapes: ``forward(num_frames=T, left_context=L)`` -> (L + 2T - 1, D); row k is offset ``k - (L + T - 1)``.

    In eval mode the last few results are kept (a stream asks for the same sizes every chunk); treat them as
    read-only.
    """

    RECENT = 4  # results kept in eval mode

    def __init__(self, embed_dim: int, dropout_rate: float = 0.15, length_factor: float = 1.0):
        super().__init__()
        if embed_dim % 2 != 0:
            raise ValueError(f"CompactRelPositionalEncoding: embed_dim must be even, got {embed_dim}")
        self.embed_dim = embed_dim
        self.dropout_rate = dropout_rate
        self.length_factor = length_factor
        self._recent: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()

    def forward(
        self, num_frames: int, device: torch.device = None, dtype: torch.dtype = torch.float32, left_context: int = 0
    ) -> torch.Tensor:
        if self.training or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return F.dropout(self._encode(num_frames, device, dtype, left_context), self.dropout_rate, self.training)
        key = (num_frames, left_context, torch.device(device or "cpu"), dtype)
        if key in self._recent:
            self._recent.move_to_end(key)
        else:
            self._recent[key] = self._encode(num_frames, device, dtype, left_context)
            if len(self._recent) > self.RECENT:
                self._recent.popitem(last=False)
        return self._recent[key]

    def _encode(self, num_frames: int, device: torch.device, dtype: torch.dtype, left_context: int) -> torch.Tensor:
        first = -(left_context + num_frames - 1)
        offsets = torch.arange(first, num_frames, device=device, dtype=torch.float32).unsqueeze(1)
        frequencies = 1 + torch.arange(self.embed_dim // 2, device=device)
        compression = self.embed_dim**0.5
        compressed = compression * offsets.sign() * ((offsets.abs() + compression).log() - math.log(compression))
        length_scale = self.length_factor * self.embed_dim / (2.0 * math.pi)
        angles = (compressed / length_scale).atan() * frequencies  # (2T - 1, D / 2)
        encoding = torch.stack((angles.cos(), angles.sin()), dim=-1).reshape(-1, self.embed_dim)
        encoding[:, -1] = 1.0
        return encoding.to(dtype)
