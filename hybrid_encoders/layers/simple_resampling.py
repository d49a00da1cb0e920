"""Zipformer's parameter-light resampling between frame rates (spec §3.3, §3.4)."""

import torch
from torch import nn

from hybrid_encoders.layers.export_mode import is_exporting


class SimpleDownsample(nn.Module):
    """Downsample time by ``factor`` with a learned softmax-weighted average of each group of frames.

    ``T`` is right-padded with copies of the last frame to a multiple of ``factor``; output frame t is
    ``sum_r softmax(bias)_r * x[t * factor + r]``.

    Args:
        factor: downsampling factor (parameter ``bias`` has this many entries, initialised to 0 = plain mean).

    Shapes: (B, T, C) -> (B, ceil(T / factor), C).
    """

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor
        self.bias = nn.Parameter(torch.zeros(factor))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, channels = x.shape
        out_frames = (frames + self.factor - 1) // self.factor
        pad = out_frames * self.factor - frames
        if is_exporting():
            # the same frames gathered with clamped indices: a traced branch on pad, or a concatenation of pad
            # frames, makes the exporter fix T modulo factor; this length is out_frames * factor by construction
            x = x.index_select(1, torch.arange(out_frames * self.factor, device=x.device).clamp(max=frames - 1))
        elif pad > 0:
            x = torch.cat((x, x[:, -1:].expand(batch, pad, channels)), dim=1)
        weights = self.bias.softmax(dim=0).to(x.dtype)
        # (1, factor) @ (B, T', factor, C) -> (B, T', 1, C): the weighted sum as one batched matmul.
        return torch.matmul(weights.unsqueeze(0), x.reshape(batch, out_frames, self.factor, channels)).squeeze(2)


class SimpleUpsample(nn.Module):
    """Upsample time by repeating each frame ``factor`` times (no parameters).

    Shapes: (B, T, C) -> (B, T * factor, C).
    """

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.repeat_interleave(x, self.factor, dim=1)
