"""Chunk-causal depthwise convolution (causal Zipformer, spec §8): a depthwise temporal convolution that, like the
chunked attention mask, sees the past and the frames of its own chunk but nothing after the chunk.

For kernel size k (odd) and chunk size c, with frame t in chunk ``[s, s + c)``:

    y[t] = causal[t] + chunkwise[t] * scale[t - s]
    causal[t]    = b_causal + sum_{i=0}^{k//2} w_causal[i] x[t - k//2 + i]            (zero before the sequence)
    chunkwise[t] = b_chunk  + sum_{i=0}^{k-1}  w_chunk[i]  x[t - k//2 + i]            (zero outside the chunk)
    scale[u]     = 1 + left_edge[u] + right_edge[u - c + k]                          (each zero beyond its k taps)

``left_edge`` / ``right_edge`` are the two rows of ``chunkwise_conv_scale`` (2, C, k): learned corrections near the
chunk's edges, where the within-chunk convolution sees zero padding. The last chunk of a sequence may be shorter
than c; it keeps the scale of a full chunk (its first frames), except that a sequence shorter than one chunk is a
single chunk of its own length (icefall's ChunkCausalDepthwiseConv1d does the same). Parameter names are icefall's.
"""

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from hybrid_encoders.layers.depthwise_conv import depthwise_conv1d
from hybrid_encoders.layers.export_mode import is_exporting
from hybrid_encoders.layers.inference_cache import cached_until_changed


class ChunkCausalDepthwiseConv1d(nn.Module):
    """Depthwise convolution that is causal across chunks and "same"-padded inside each chunk.

    Args:
        channels: channels C.
        kernel_size: odd kernel size k of the within-chunk convolution; the causal one has (k + 1) / 2 taps.

    Shapes: ``forward(x (B, C, T), chunk_size) -> (B, C, T)``; ``forward_chunk`` for streaming.
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ChunkCausalDepthwiseConv1d: kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.causal_conv = nn.Conv1d(channels, channels, (kernel_size + 1) // 2, groups=channels)
        self.chunkwise_conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.chunkwise_conv_scale = nn.Parameter(torch.empty(2, channels, kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """icefall: default convolution weights, causal bias U(-0.1, 0.1), no edge corrections."""
        nn.init.uniform_(self.causal_conv.bias, -0.1, 0.1)
        nn.init.zeros_(self.chunkwise_conv_scale)

    @property
    def left_context(self) -> int:
        """Past frames the causal convolution reads (k // 2): the streaming cache length."""
        return self.kernel_size // 2

    def chunk_scale(self, chunk_size: int) -> torch.Tensor:
        """(C, chunk_size) scale of the within-chunk output, frame by frame of a chunk (kept between inference
        calls)."""
        return cached_until_changed(
            self, f"_chunk_scale_{chunk_size}", (self.chunkwise_conv_scale,), lambda: self._chunk_scale(chunk_size)
        )

    def _chunk_scale(self, chunk_size: int) -> torch.Tensor:
        taps = min(chunk_size, self.kernel_size)
        left_edge = F.pad(self.chunkwise_conv_scale[0, :, :taps], (0, chunk_size - taps))
        right_edge = F.pad(self.chunkwise_conv_scale[1, :, self.kernel_size - taps :], (chunk_size - taps, 0))
        return 1.0 + left_edge + right_edge

    def _within_chunk(self, rows: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """The scaled within-chunk convolution of frame-major rows (B, T, C), T = n * chunk_size -> (B, C, T)."""
        batch, frames, channels = rows.shape
        # (B, T, C) -> (B n, C, chunk) as a transposed view: the channels-last layout depthwise_conv1d wants
        chunks = rows.reshape(batch * (frames // chunk_size), chunk_size, channels).transpose(1, 2)
        padding = self.kernel_size // 2
        y = depthwise_conv1d(chunks, self.chunkwise_conv.weight, self.chunkwise_conv.bias, padding, padding)
        y = y * self.chunk_scale(chunk_size)
        return y.transpose(1, 2).reshape(batch, frames, channels).transpose(1, 2)

    def forward(self, x: torch.Tensor, chunk_size: int = -1) -> torch.Tensor:
        """
        Args:
            x: (B, C, T).
            chunk_size: frames per chunk; -1 (or more than T): the whole sequence is one chunk.

        Returns:
            (B, C, T).
        """
        frames = x.size(-1)
        if chunk_size < 0 or chunk_size > frames:
            chunk_size = frames
        causal = depthwise_conv1d(x, self.causal_conv.weight, self.causal_conv.bias, self.left_context, 0)
        rows = x.transpose(1, 2)  # free when x is itself a transposed (B, T, C) tensor, as in the conv module
        right_pad = -frames % chunk_size
        if right_pad:  # the last chunk is short: zeros complete it
            rows = F.pad(rows, (0, 0, 0, right_pad))
        return causal + self._within_chunk(rows, chunk_size)[..., :frames]

    def forward_chunk(
        self, x: torch.Tensor, cache: torch.Tensor, chunk_size: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One chunk of a stream.

        Both convolutions read the same window, frames ``t - k//2 .. t + k//2`` of the cached frames, the chunk and
        zeros after it (the within-chunk one only inside the chunk), so the chunk is one position-dependent filter
        (:meth:`_chunk_filter`, kept between calls) applied to sliding windows: a few small operations instead of two
        convolution calls, whose fixed cost dominates for the handful of frames of a chunk.

        Args:
            x: (B, C, t) the chunk's frames, t <= chunk_size (t < chunk_size only for a sequence's last chunk).
            cache: (B, C, k // 2) the frames before the chunk (zeros before the sequence start).
            chunk_size: the chunk size whose scale applies (a sequence shorter than one chunk: its length).

        Returns:
            (B, C, t) output and the (B, C, k // 2) cache for the next chunk.
        """
        if is_exporting():
            return self._forward_chunk_as_convolutions(x, cache, chunk_size)
        frames, half = x.size(-1), self.left_context
        context = torch.cat((cache, x, x.new_zeros(*x.shape[:2], half)), dim=-1)  # (B, C, t + 2 half)
        weight, bias = cached_until_changed(
            self,
            f"_chunk_filter_{frames}_{chunk_size}",
            (self.causal_conv.weight, self.causal_conv.bias, self.chunkwise_conv.weight, self.chunkwise_conv.bias,
             self.chunkwise_conv_scale),
            lambda: self._chunk_filter(frames, chunk_size),
        )  # fmt: skip
        out = (context.unfold(-1, self.kernel_size, 1) * weight).sum(-1).add_(bias)
        return out, context[..., frames : frames + half]

    def _forward_chunk_as_convolutions(
        self, x: torch.Tensor, cache: torch.Tensor, chunk_size: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward_chunk` as its two depthwise convolutions, for exported graphs: onnxruntime runs the
        sliding-window product as Gather nodes, 3x slower than its convolution kernels."""
        frames, half = x.size(-1), self.left_context
        history = torch.cat((cache, x), dim=-1)  # (B, C, half + t)
        causal = depthwise_conv1d(history, self.causal_conv.weight, self.causal_conv.bias, 0, 0)
        chunkwise = depthwise_conv1d(x, self.chunkwise_conv.weight, self.chunkwise_conv.bias, half, half)
        return causal + chunkwise * self.chunk_scale(chunk_size)[:, :frames], history[..., frames:]

    def _chunk_filter(self, frames: int, chunk_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(C, t, k) weights and (C, t) bias with ``out[t] = bias[t] + sum_j weight[t, j] window[t + j]`` over the
        window of cached frames, chunk and zeros: the causal taps everywhere, the within-chunk taps scaled by the
        frame's edge scale where they fall inside the chunk."""
        half, kernel = self.left_context, self.kernel_size
        scale = self.chunk_scale(chunk_size)[:, :frames]  # (C, t)
        causal = F.pad(self.causal_conv.weight[:, 0], (0, kernel - half - 1))  # (C, k): taps of frames t - half .. t
        inside = (torch.arange(frames)[:, None] + torch.arange(kernel)[None, :] >= half).to(scale)  # (t, k)
        weight = causal[:, None, :] + scale[:, :, None] * self.chunkwise_conv.weight[:, 0][:, None, :] * inside
        return weight, self.causal_conv.bias[:, None] + scale * self.chunkwise_conv.bias[:, None]
