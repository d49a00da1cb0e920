"""ChunkCausalDepthwiseConv1d against a frame-by-frame reference; the streaming step against the whole sequence."""

import pytest
import torch

from hybrid_encoders.layers import chunk_causal_conv
from hybrid_encoders.layers.chunk_causal_conv import ChunkCausalDepthwiseConv1d


def _module(channels: int, kernel: int) -> ChunkCausalDepthwiseConv1d:
    torch.manual_seed(kernel)
    conv = ChunkCausalDepthwiseConv1d(channels, kernel).double()
    with torch.no_grad():
        conv.chunkwise_conv_scale.normal_(0.0, 0.5)  # zero at init: make the edge corrections matter
    return conv


def _reference(conv: ChunkCausalDepthwiseConv1d, x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """The definition, one output value at a time (icefall's semantics: a sequence shorter than a chunk is one chunk
    of its own length; a short last chunk keeps a full chunk's edge scales)."""
    batch, channels, frames = x.shape
    kernel = conv.kernel_size
    half = kernel // 2
    chunk = frames if chunk_size < 0 or chunk_size > frames else chunk_size
    left_edge, right_edge = conv.chunkwise_conv_scale[0], conv.chunkwise_conv_scale[1]
    out = torch.zeros_like(x)
    for b in range(batch):
        for c in range(channels):
            for t in range(frames):
                start = (t // chunk) * chunk
                causal = conv.causal_conv.bias[c] + sum(
                    conv.causal_conv.weight[c, 0, i] * x[b, c, t - half + i]
                    for i in range(half + 1)
                    if t - half + i >= 0
                )
                within = conv.chunkwise_conv.bias[c] + sum(
                    conv.chunkwise_conv.weight[c, 0, i] * x[b, c, t - half + i]
                    for i in range(kernel)
                    if start <= t - half + i < min(start + chunk, frames)
                )
                position = t - start
                scale = 1.0
                if position < kernel:
                    scale += left_edge[c, position]
                if position >= chunk - kernel:
                    scale += right_edge[c, position - (chunk - kernel)]
                out[b, c, t] = causal + within * scale
    return out


@pytest.mark.parametrize(
    "kernel, frames, chunk_size",
    [(5, 13, 4), (5, 12, 4), (7, 11, 8), (3, 10, 16), (5, 9, -1), (7, 20, 3), (5, 6, 6)],
)
def test_matches_frame_by_frame_reference(kernel, frames, chunk_size):
    conv = _module(3, kernel)
    x = torch.randn(2, 3, frames, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(conv(x, chunk_size), _reference(conv, x, chunk_size))


def test_channels_last_input_view_gives_the_same_values():
    conv = _module(4, 5)
    rows = torch.randn(2, 10, 4, dtype=torch.float64)  # (B, T, C), as the convolution module holds it
    with torch.no_grad():
        torch.testing.assert_close(conv(rows.transpose(1, 2), 4), conv(rows.transpose(1, 2).contiguous(), 4))


@pytest.mark.parametrize("exporting", [False, True], ids=["eager", "export_path"])
@pytest.mark.parametrize("frames, chunk_size", [(23, 4), (24, 8), (5, 8), (9, 2)])
def test_streaming_steps_equal_the_whole_sequence(frames, chunk_size, exporting, monkeypatch):
    """Both forms of forward_chunk: the sliding-window filter (eager) and the two convolutions (exported graphs)."""
    monkeypatch.setattr(chunk_causal_conv, "is_exporting", lambda: exporting)
    conv = _module(3, 7)
    x = torch.randn(2, 3, frames, dtype=torch.float64)
    cache = torch.zeros(2, 3, conv.left_context, dtype=torch.float64)
    pieces = []
    with torch.no_grad():
        for start in range(0, frames, chunk_size):
            piece = x[..., start : start + chunk_size]
            # a sequence shorter than one chunk is a chunk of its own length (as in forward)
            size = piece.size(-1) if frames < chunk_size else chunk_size
            out, cache = conv.forward_chunk(piece, cache, size)
            pieces.append(out)
        torch.testing.assert_close(torch.cat(pieces, dim=-1), conv(x, chunk_size))


def test_is_causal_across_chunks_and_sees_its_own_chunk():
    conv = _module(2, 5)
    x = torch.randn(1, 2, 16, dtype=torch.float64)
    changed = x.clone()
    changed[..., 8] += 1.0  # first frame of the third chunk of 4
    with torch.no_grad():
        before, after = conv(x, 4), conv(changed, 4)
    assert torch.equal(before[..., :8], after[..., :8])  # earlier chunks: bit-identical
    assert (before[..., 8:11] - after[..., 8:11]).abs().amax(dim=1).gt(0).all()  # its chunk, within the kernel's reach
    changed[..., 11] += 1.0
    with torch.no_grad():
        after = conv(changed, 4)
    assert not torch.equal(before[..., 12:14], after[..., 12:14])  # the next chunk sees it through the causal part


def test_parameter_names_are_icefalls_and_init():
    conv = ChunkCausalDepthwiseConv1d(6, 9)
    shapes = {name: tuple(p.shape) for name, p in conv.named_parameters()}
    assert shapes == {
        "causal_conv.weight": (6, 1, 5),
        "causal_conv.bias": (6,),
        "chunkwise_conv.weight": (6, 1, 9),
        "chunkwise_conv.bias": (6,),
        "chunkwise_conv_scale": (2, 6, 9),
    }
    assert torch.equal(conv.chunkwise_conv_scale, torch.zeros(2, 6, 9))
    assert conv.causal_conv.bias.abs().max() <= 0.1
    with pytest.raises(ValueError, match="kernel_size"):
        ChunkCausalDepthwiseConv1d(4, 6)
