"""Padding masks and the input checks every encoder runs before its first layer."""

from typing import Optional

import torch

from hybrid_encoders.layers.export_mode import is_exporting


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


def check_encoder_input(xs_pad: torch.Tensor, ilens: torch.Tensor, input_size: int, name: str) -> None:
    """Reject inputs an encoder cannot process correctly, with a message naming what is wrong.

    Args:
        xs_pad: (B, T, input_size) padded features.
        ilens: (B,) valid lengths.
        input_size: the feature dimension the encoder was built for.
        name: the encoder's name, for the messages.

    Raises:
        ValueError: wrong number of dimensions, feature size or dtype; lengths that do not match the batch or exceed
            T; NaN or Inf in the valid frames.
    """
    if xs_pad.dim() != 3:
        raise ValueError(f"{name}: xs_pad must be (batch, time, {input_size}), got shape {tuple(xs_pad.shape)}")
    if xs_pad.size(2) != input_size:
        raise ValueError(
            f"{name}: xs_pad has feature size {xs_pad.size(2)} but the encoder was built with input_size={input_size}"
        )
    if not xs_pad.is_floating_point():
        raise ValueError(f"{name}: xs_pad must be a floating-point tensor, got {xs_pad.dtype}")
    if ilens.dim() != 1 or ilens.size(0) != xs_pad.size(0):
        raise ValueError(f"{name}: ilens must have shape ({xs_pad.size(0)},), got {tuple(ilens.shape)}")
    if is_exporting():  # the value checks below cannot be traced; the deployed runtime checks lengths itself
        return
    if ilens.numel() and (int(ilens.max()) > xs_pad.size(1) or int(ilens.min()) < 0):
        raise ValueError(
            f"{name}: ilens must lie in [0, {xs_pad.size(1)}] (the padded length), got {ilens.tolist()}"
        )
    valid = ~make_pad_mask(ilens, xs_pad.size(1))
    if not torch.isfinite(xs_pad[valid]).all():
        raise ValueError(f"{name}: xs_pad contains NaN or Inf within the valid frames")


def raise_too_short(name: str, ilens: torch.Tensor, min_length: int) -> None:
    """Raise ESPnet's ``TooShortUttError`` when some input is shorter than ``min_length`` frames.

    ESPnet's ``asr_inference`` catches this exception and writes an empty hypothesis instead of crashing.
    """
    if is_exporting():
        return
    shortest = int(ilens.min()) if ilens.numel() else min_length
    if shortest >= min_length:
        return
    try:
        from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError
    except ImportError:  # ESPnet releases that moved ESPnet1 code under espnet2.legacy
        from espnet2.legacy.nets.pytorch_backend.transformer.subsampling import TooShortUttError
    raise TooShortUttError(
        f"{name}: input has {shortest} frames, but the total downsampling needs at least {min_length}",
        shortest,
        min_length,
    )
