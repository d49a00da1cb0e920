"""Chunked (causal) processing shared by the full-utterance forward and chunk-by-chunk streaming.

A causal encoder splits its frames into chunks of ``chunk_size`` frames. A frame sees every frame of its own chunk
and of the ``left_context_chunks`` chunks before it, nothing later; ``-1`` means no limit (a full-context chunk, or
an unlimited left context). Computed at each stack's own frame rate, a stack downsampled by d uses chunks of
``chunk_size / d`` frames and the same number of left chunks, which is icefall's 50 Hz mask subsampled by d.
"""

import math
import warnings
from typing import Optional, Sequence

import torch

FULL = -1  # chunk size or left context "without limit"


def left_context_chunks(chunk_size: int, left_context_frames: int) -> int:
    """Whole chunks of left context a chunk may see (at least one), or -1 (unlimited), as icefall counts them."""
    if chunk_size == FULL or left_context_frames == FULL:
        return FULL
    return max(1, left_context_frames // chunk_size)


def chunk_attention_mask(
    frames: int, chunk_size: int, left_chunks: int, device: torch.device = None
) -> Optional[torch.Tensor]:
    """(T, T) bool mask, True where query frame i may not see key frame j; None when nothing is masked.

    With c(t) = t // chunk_size, key j is visible from query i iff ``c(i) - left_chunks <= c(j) <= c(i)``.
    """
    if chunk_size == FULL or chunk_size >= frames:  # one chunk: nothing to mask
        return None
    chunk = torch.arange(frames, device=device) // chunk_size
    query, key = chunk.unsqueeze(1), chunk.unsqueeze(0)
    mask = key > query
    if left_chunks != FULL:
        mask |= key < query - left_chunks
    return mask


def check_chunking(
    name: str,
    chunk_sizes: Sequence[int],
    left_context_frames: Sequence[int],
    downsampling_factors: Sequence[int],
    conv_left_contexts: Sequence[int],
) -> None:
    """Raise a ValueError naming the key when a chunk size or left context cannot be used.

    Args:
        name: the encoder's name, for the messages.
        chunk_sizes: candidate chunk sizes (embed frames, -1 = full context).
        left_context_frames: candidate left contexts (embed frames, -1 = unlimited).
        downsampling_factors: every frame-rate reduction a chunk must stay aligned with (the stacks' and the output's).
        conv_left_contexts: per stack, the left frames of its causal convolution times its downsampling factor.

    A chunk size must be a positive multiple of every factor (or -1); a left context is positive (or -1) and, with
    every chunk size, covers the convolutions' left reach (icefall's condition).
    """
    multiple = math.lcm(*downsampling_factors)
    for chunk in chunk_sizes:
        if not isinstance(chunk, int) or (chunk != FULL and (chunk <= 0 or chunk % multiple)):
            raise ValueError(
                f"{name}: chunk_size entries must be -1 or positive multiples of {multiple} (every downsampling "
                f"factor and the output's 2), got {chunk!r}"
            )
    for left in left_context_frames:
        if not isinstance(left, int) or (left != FULL and left <= 0):
            raise ValueError(f"{name}: left_context_frames entries must be -1 or > 0, got {left!r}")
        for chunk in chunk_sizes:
            chunks = left_context_chunks(chunk, left)
            if chunks != FULL and chunks * chunk < max(conv_left_contexts):
                raise ValueError(
                    f"{name}: left_context_frames={left} with chunk_size={chunk} sees {chunks * chunk} frames, fewer "
                    f"than the convolutions reach ({max(conv_left_contexts)} = cnn_module_kernel // 2 x "
                    "downsampling_factor); use a longer left context"
                )


def warn_if_untrained(name: str, key: str, value: int, trained: Sequence[int]) -> None:
    """Warn when a decoding chunk setting is not among the values the model was trained with."""
    if value not in trained:
        warnings.warn(
            f"{name}: {key}={value} works, but was not trained for it (training drew from {list(trained)})",
            stacklevel=4,  # the caller of set_streaming or of the constructor
        )
