"""Relative sinusoidal positional encoding (Transformer-XL, Dai et al. 2019, App. B; ESPnet's "latest" rel-pos).

For a sequence of length T the encoding holds one row per relative distance, ``T-1, T-2, ..., 0, ..., -(T-1)``:
``PE(p)[2i] = sin(p / 10000^(2i/d))``, ``PE(p)[2i+1] = cos(p / 10000^(2i/d))``. It has no parameters and is not
added to the input: it only feeds the positional term of :class:`~hybrid_encoders.layers.rel_attention.
RelPositionMultiHeadedAttention`. Equal to ESPnet's ``RelPositionalEncoding`` and NeMo's table (Squeezeformer
research note, Sec. 1.3).
"""

import math

import torch
from torch import nn

from hybrid_encoders.layers.export_mode import is_exporting


class RelPositionalEncoding(nn.Module):
    """Table of relative sinusoidal encodings, extended on demand.

    Args:
        d_model: encoding dimension (even).
        max_len: length covered by the initial table; longer inputs extend it.
    """

    def __init__(self, d_model: int, max_len: int = 1000):
        super().__init__()
        if d_model % 2 != 0:
            raise ValueError(f"RelPositionalEncoding: d_model must be even, got {d_model}")
        self.d_model = d_model
        self.register_buffer("table", self._make_table(max_len), persistent=False)

    def _make_table(self, max_len: int, device: torch.device = None) -> torch.Tensor:
        """(2 * max_len - 1, d_model) rows for the distances max_len-1 ... -(max_len-1)."""
        positions = torch.arange(max_len - 1, -max_len, -1, dtype=torch.float32, device=device).unsqueeze(1)
        inverse_frequencies = torch.exp(
            torch.arange(0, self.d_model, 2, dtype=torch.float32, device=device) * -(math.log(10000.0) / self.d_model)
        )
        angles = positions * inverse_frequencies
        # interleave: column 2i is sin, column 2i + 1 is cos
        return torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1).reshape(2 * max_len - 1, self.d_model)

    def forward(self, length: int) -> torch.Tensor:
        """Encodings for a sequence of ``length`` frames: (1, 2 * length - 1, d_model), distances length-1 ... 1-length."""
        if is_exporting():  # computed for the traced length: a stored table would freeze a maximum length
            return self._make_table(length, self.table.device).unsqueeze(0)
        max_len = (self.table.size(0) + 1) // 2
        if length > max_len:
            self.table = self._make_table(length).to(self.table.device)
            max_len = length
        return self.table[max_len - length : max_len + length - 1].unsqueeze(0)
