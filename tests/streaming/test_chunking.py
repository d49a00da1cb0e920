"""Chunked attention masks and chunk-setting checks (hybrid_encoders.streaming.chunking)."""

import warnings

import pytest
import torch

from hybrid_encoders.streaming.chunking import (
    check_chunking,
    chunk_attention_mask,
    left_context_chunks,
    warn_if_untrained,
)


def _icefall_style_mask(frames: int, chunk_size: int, left_frames: int, factor: int) -> torch.Tensor:
    """The mask the way icefall builds it: at the 50 Hz embed rate, then every factor-th row and column."""
    full = frames * factor
    left_chunks = 10**6 if left_frames < 0 else max(1, left_frames // chunk_size)
    mask = torch.zeros(full, full, dtype=torch.bool)
    for i in range(full):
        for j in range(full):
            mask[i, j] = j // chunk_size > i // chunk_size or j // chunk_size < i // chunk_size - left_chunks
    return mask[::factor, ::factor]


@pytest.mark.parametrize(
    "frames, chunk_size, left_frames, factor",
    [(40, 8, 16, 1), (41, 8, 16, 1), (20, 16, 32, 2), (11, 32, 64, 4), (7, 64, 64, 8), (37, 4, -1, 1), (5, 16, 8, 1)],
)
def test_mask_per_stack_equals_icefalls_subsampled_mask(frames, chunk_size, left_frames, factor):
    mask = chunk_attention_mask(frames, chunk_size // factor, left_context_chunks(chunk_size, left_frames))
    expected = _icefall_style_mask(frames, chunk_size, left_frames, factor)
    if mask is None:  # nothing masked
        assert not expected.any()
    else:
        assert torch.equal(mask, expected)


def test_full_context_has_no_mask_and_left_chunks_round_like_icefall():
    assert chunk_attention_mask(50, -1, -1) is None
    assert chunk_attention_mask(10, 16, 2) is None  # one chunk
    assert left_context_chunks(16, 64) == 4 and left_context_chunks(32, 48) == 1 and left_context_chunks(64, 32) == 1
    assert left_context_chunks(-1, 64) == -1 and left_context_chunks(16, -1) == -1


@pytest.mark.parametrize(
    "chunks, lefts, match",
    [
        ([16, 12], [64], "chunk_size entries must be -1 or positive multiples of 8"),
        ([0], [64], "chunk_size"),
        ([16], [0], "left_context_frames entries"),
        ([16], [16], "left_context_frames=16 with chunk_size=16 sees 16 frames, fewer than the convolutions reach"),
    ],
)
def test_check_chunking_names_the_problem(chunks, lefts, match):
    with pytest.raises(ValueError, match=match):
        check_chunking("zipformer", chunks, lefts, [1, 2, 4, 8, 2], [15, 30, 28, 56])
    check_chunking("zipformer", [16, 32, 64, -1], [64, 128, 256, -1], [1, 2, 4, 8, 2], [15, 30, 28, 56])


def test_untrained_setting_warns():
    with pytest.warns(UserWarning, match="chunk_size=24 works, but was not trained for it"):
        warn_if_untrained("zipformer", "chunk_size", 24, [16, 32])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_untrained("zipformer", "chunk_size", 32, [16, 32])
