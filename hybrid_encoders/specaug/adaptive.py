"""SpecAugment with length-adaptive time masks, as the Squeezeformer paper trains (Sec. 4.1; TF
``SpecAugmentation``; NeMo ``SpectrogramAugmentation(time_width=0.05)``), registered as ``specaug: adaptive_specaug``.

Per utterance of length L (frames) and F feature bins:

* ``num_freq_masks`` frequency masks (2), width f ~ U{0, ..., freq_mask_width - 1} (27 -> 0..26), start
  f0 = floor((F - f) u), u ~ U[0, 1);
* ``num_time_masks`` time masks (5 for XS/S/SM, 7 for M, 10 for ML/L), width t = floor(L r), r ~ U[0,
  time_mask_width_ratio) (0.05), start t0 = floor((L - t) u): the width scales with the utterance's own length, and
  every mask lies inside the utterance;
* optionally (``time_mask_count_ratio``, Park et al. 2020, "SpecAugment on large scale datasets", adaptive
  multiplicity) the number of time masks also scales with the length: min(num_time_masks, floor(L p)).

Masked values are set to 0 (the paper's TF code multiplies by 0). Independent draws for every utterance.

Why not ESPnet's ``SpecAug``: its ``time_mask_width_ratio_range`` scales the width by the *padded batch* length (the
same maximum width for every utterance of the batch) and places masks anywhere in the padded length, so a short
utterance in a batch with a long one gets masks as wide as the long one's, or masks that fall into its padding;
and its number of masks is fixed. Per-utterance widths and placement cannot be expressed with its options.
"""

from typing import Optional, Tuple

import torch
from espnet2.asr.specaug.abs_specaug import AbsSpecAug


def _spans(starts: torch.Tensor, widths: torch.Tensor, size: int) -> torch.Tensor:
    """(B, M) starts and widths -> (B, size) bool, True inside any of the M spans."""
    positions = torch.arange(size, device=starts.device)
    inside = (positions >= starts.unsqueeze(-1)) & (positions < (starts + widths).unsqueeze(-1))
    return inside.any(dim=1)


class AdaptiveSpecAug(AbsSpecAug):
    """Frequency masks and length-adaptive time masks on (B, T, F) features.

    Args:
        num_freq_masks: number of frequency masks per utterance.
        freq_mask_width: frequency mask widths are drawn from 0 .. freq_mask_width - 1.
        num_time_masks: number of time masks per utterance (the maximum, with ``time_mask_count_ratio``).
        time_mask_width_ratio: a time mask is at most this fraction of the utterance's length.
        time_mask_count_ratio: if set, an utterance of L frames gets min(num_time_masks, floor(L *
            time_mask_count_ratio)) time masks.

    Raises:
        ValueError: an invalid value, naming the key.
    """

    def __init__(
        self,
        num_freq_masks: int = 2,
        freq_mask_width: int = 27,
        num_time_masks: int = 5,
        time_mask_width_ratio: float = 0.05,
        time_mask_count_ratio: Optional[float] = None,
    ):
        super().__init__()
        for key, value in (
            ("num_freq_masks", num_freq_masks),
            ("freq_mask_width", freq_mask_width),
            ("num_time_masks", num_time_masks),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"adaptive_specaug: {key} must be an int >= 0, got {value!r}")
        if not 0.0 <= time_mask_width_ratio <= 1.0:
            raise ValueError(f"adaptive_specaug: time_mask_width_ratio must be in [0, 1], got {time_mask_width_ratio!r}")
        if time_mask_count_ratio is not None and not time_mask_count_ratio > 0:
            raise ValueError(f"adaptive_specaug: time_mask_count_ratio must be > 0, got {time_mask_count_ratio!r}")
        self.num_freq_masks = num_freq_masks
        self.freq_mask_width = freq_mask_width
        self.num_time_masks = num_time_masks
        self.time_mask_width_ratio = time_mask_width_ratio
        self.time_mask_count_ratio = time_mask_count_ratio

    def extra_repr(self) -> str:
        return (
            f"num_freq_masks={self.num_freq_masks}, freq_mask_width={self.freq_mask_width}, "
            f"num_time_masks={self.num_time_masks}, time_mask_width_ratio={self.time_mask_width_ratio}, "
            f"time_mask_count_ratio={self.time_mask_count_ratio}"
        )

    def masks(self, lengths: torch.Tensor, frames: int, bins: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Draw the masks.

        Args:
            lengths: (B,) utterance lengths.
            frames: padded length T.
            bins: feature bins F.

        Returns:
            ``(time_mask (B, T), freq_mask (B, F))``, bool, True where the features are zeroed.
        """
        batch, device = lengths.size(0), lengths.device
        lengths_f = lengths.to(torch.float32).unsqueeze(1)  # (B, 1)
        ratios = torch.rand(batch, self.num_time_masks, device=device) * self.time_mask_width_ratio
        time_widths = (lengths_f * ratios).long()
        time_starts = ((lengths_f - time_widths) * torch.rand(batch, self.num_time_masks, device=device)).long()
        if self.time_mask_count_ratio is not None:
            counts = torch.clamp((lengths_f * self.time_mask_count_ratio).long(), max=self.num_time_masks)
            time_widths = time_widths * (torch.arange(self.num_time_masks, device=device) < counts)
        freq_widths = torch.randint(0, max(1, self.freq_mask_width), (batch, self.num_freq_masks), device=device)
        freq_starts = ((bins - freq_widths) * torch.rand(batch, self.num_freq_masks, device=device)).long()
        return _spans(time_starts, time_widths, frames), _spans(freq_starts, freq_widths, bins)

    def forward(
        self, x: torch.Tensor, x_lengths: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(B, T, F) features and (B,) lengths (None: all T) -> masked features and the same lengths."""
        batch, frames, bins = x.shape
        lengths = x_lengths if x_lengths is not None else torch.full((batch,), frames, device=x.device)
        time_mask, freq_mask = self.masks(lengths, frames, bins)
        return x.masked_fill(time_mask.unsqueeze(2) | freq_mask.unsqueeze(1), 0.0), x_lengths
