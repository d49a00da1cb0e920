"""Padding masks and the input checks every encoder runs before its first layer.

Every encoder's ``forward`` starts with :func:`prepare_encoder_input` (validation with errors that name the argument,
then the padded frames set to zero, so that whatever the padding holds never reaches a valid output) and
:func:`raise_too_short` (ESPnet's ``TooShortUttError``, naming the utterances when ESPnet's trainer runs the model).
"""

import math
from typing import Optional

import torch

from hybrid_encoders.batch_context import BatchContext, find_batch_context
from hybrid_encoders.layers.autocast_state import autocast_dtype
from hybrid_encoders.layers.export_mode import is_exporting

MAX_LISTED = 10  # short inputs named in one TooShortUttError message


def make_pad_mask(lengths: torch.Tensor, max_len: Optional[int] = None) -> torch.Tensor:
    """Boolean padding mask.

    Args:
        lengths: (B,) valid lengths.
        max_len: length of the time axis; ``max(lengths)`` when None.

    Returns:
        (B, max_len) bool tensor, True at padded positions (``t >= lengths[b]``).
    """
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() > 0 else 0
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) >= lengths.unsqueeze(1)


def check_encoder_input(
    xs_pad: torch.Tensor,
    ilens: torch.Tensor,
    input_size: int,
    name: str,
    param_dtype: Optional[torch.dtype] = None,
) -> None:
    """Reject inputs an encoder cannot process correctly, with a message naming what is wrong.

    Args:
        xs_pad: (B, T, input_size) padded features.
        ilens: (B,) valid lengths, an integer tensor.
        input_size: the feature dimension the encoder was built for.
        name: the encoder's name, for the messages.
        param_dtype: the dtype of the encoder's parameters; outside autocast ``xs_pad`` must have it. None: unchecked.

    Raises:
        ValueError: not tensors; wrong number of dimensions, feature size or dtype; an empty batch; lengths that are
            not integers, do not match the batch or exceed T; NaN or Inf in the valid frames.
    """
    if not isinstance(xs_pad, torch.Tensor):
        raise ValueError(
            f"{name}: xs_pad must be a torch.Tensor (batch, time, {input_size}), got {type(xs_pad).__name__}"
        )
    if not isinstance(ilens, torch.Tensor):
        raise ValueError(f"{name}: ilens must be a 1-D integer torch.Tensor of lengths, got {type(ilens).__name__}")
    if xs_pad.dim() != 3:
        raise ValueError(f"{name}: xs_pad must be (batch, time, {input_size}), got shape {tuple(xs_pad.shape)}")
    if xs_pad.size(2) != input_size:
        raise ValueError(
            f"{name}: xs_pad has feature size {xs_pad.size(2)} but the encoder was built with input_size={input_size}"
        )
    if not xs_pad.is_floating_point():
        raise ValueError(f"{name}: xs_pad must be a floating-point tensor, got {xs_pad.dtype}")
    if ilens.dtype == torch.bool or ilens.is_floating_point() or ilens.is_complex():
        raise ValueError(f"{name}: ilens must be an integer tensor (torch.long) of frame counts, got {ilens.dtype}")
    if ilens.dim() != 1 or ilens.size(0) != xs_pad.size(0):
        raise ValueError(f"{name}: ilens must have shape ({xs_pad.size(0)},), got {tuple(ilens.shape)}")
    if xs_pad.size(0) == 0:
        raise ValueError(f"{name}: empty batch (xs_pad has shape {tuple(xs_pad.shape)})")
    if param_dtype is not None and xs_pad.dtype != param_dtype and autocast_dtype(xs_pad.device.type) is None:
        raise ValueError(
            f"{name}: xs_pad is {xs_pad.dtype} but the encoder's parameters are {param_dtype}: convert one to the "
            f"other (xs_pad.to({param_dtype}) or encoder.to({xs_pad.dtype})) or run the encoder under torch.autocast"
        )
    if is_exporting():  # the value checks below cannot be traced; the deployed runtime checks lengths itself
        return
    if int(ilens.max()) > xs_pad.size(1) or int(ilens.min()) < 0:
        raise ValueError(
            f"{name}: ilens must lie in [0, {xs_pad.size(1)}] (the padded length), got {ilens.tolist()}"
        )
    valid = ~make_pad_mask(ilens, xs_pad.size(1))
    if not torch.isfinite(xs_pad[valid]).all():
        raise ValueError(f"{name}: xs_pad contains NaN or Inf within the valid frames")


def prepare_encoder_input(
    xs_pad: torch.Tensor, ilens: torch.Tensor, input_size: int, name: str, param_dtype: torch.dtype
) -> torch.Tensor:
    """:func:`check_encoder_input`, then the padded frames set to zero.

    Zero is what ESPnet's frontends and collate function put there, so nothing changes for input from ESPnet; for any
    other input, padding (NaN, Inf, values that overflow fp16, stale memory) never reaches a valid output, in any
    encoder. Zipformer's valid outputs still depend on how much padding follows (as icefall's do), not on its values.

    Returns:
        (B, T, input_size) ``xs_pad`` with ``xs_pad[b, t] = 0`` for ``t >= ilens[b]``.
    """
    check_encoder_input(xs_pad, ilens, input_size, name, param_dtype)
    return xs_pad.masked_fill(make_pad_mask(ilens, xs_pad.size(1)).unsqueeze(-1), 0.0)


def raise_too_short(name: str, ilens: torch.Tensor, min_length: int) -> None:
    """Raise ESPnet's ``TooShortUttError`` when some input is shorter than ``min_length`` frames.

    ESPnet's ``asr_inference`` catches this exception and writes an empty hypothesis instead of crashing. ESPnet's
    trainer cannot skip a batch item, so in training the message names each short utterance (its id, frames and
    duration, found with :func:`hybrid_encoders.batch_context.find_batch_context`; batch indices when run outside
    ESPnet's trainer) and the ``asr.sh --min_wav_duration`` that removes such utterances.
    """
    if is_exporting():
        return
    short = [index for index, length in enumerate(ilens.tolist()) if length < min_length]
    if not short:
        return
    try:
        from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError
    except ImportError:  # ESPnet releases that moved ESPnet1 code under espnet2.legacy
        from espnet2.legacy.nets.pytorch_backend.transformer.subsampling import TooShortUttError
    context = find_batch_context(ilens.numel())
    shown = ", ".join(_describe_short_input(index, int(ilens[index]), context) for index in short[:MAX_LISTED])
    if len(short) > MAX_LISTED:
        shown += f" and {len(short) - MAX_LISTED} more"
    # a frame every 10 ms over a 25 ms window: (n - 1) shifts + one window, rounded up to 10 ms
    min_seconds = math.ceil(((min_length - 1) * 10 + 25) / 10) / 100
    raise TooShortUttError(
        f"{name}: {len(short)} of {ilens.numel()} inputs in this batch are shorter than the {min_length} frames the "
        f"encoder's subsampling needs ({min_length * 10} ms at a 10 ms frame shift): {shown}. ESPnet's trainer cannot "
        f"skip an utterance: remove the short ones from the training data, e.g. with asr.sh --min_wav_duration "
        f"{min_seconds} or more (see Troubleshooting in hybrid-encoders' README).",
        int(ilens[short[0]]),
        min_length,
    )


def _describe_short_input(index: int, frames: int, context: Optional[BatchContext]) -> str:
    """``'utt3' (5 frames, 0.052 s)``, ``'utt7' (empty: 0 samples)``; ``batch item 1 (5 frames, ~0.05 s ...)``."""
    if context is None:
        return f"batch item {index} ({frames} frames, ~{frames / 100:.2f} s at a 10 ms frame shift)"
    label = repr(context.utt_ids[index])
    samples = None if context.speech_lengths is None else int(context.speech_lengths[index])
    if samples == 0:
        return f"{label} (empty: 0 samples)"
    if samples is not None and context.sample_rate is not None:
        return f"{label} ({frames} frames, {samples / context.sample_rate:.3f} s)"
    return f"{label} ({frames} frames, ~{frames / 100:.2f} s at a 10 ms frame shift)"
