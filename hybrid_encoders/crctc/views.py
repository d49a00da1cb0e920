"""The two augmented views of a feature batch that CR-CTC trains on (Yao et al., ICLR 2025, Sec. 3.2).

The views differ only in their masks. Time warping, which moves frames, is drawn once and shared by both views
(icefall warps before duplicating the batch): the consistency loss compares the two views frame by frame, so their
frames must stay aligned. Frequency and time masks are drawn independently for each view, with the larger time
masking the paper uses (configured in the ``specaug_conf``; see docs/crctc.md).

* ESPnet's ``specaug: specaug`` (``SpecAug``): its ``time_warp`` is applied once, its ``freq_mask`` and ``time_mask``
  to each view.
* Any other SpecAugment (e.g. ``specaug: adaptive_specaug``, which does not warp): applied to the stacked views, so
  every draw is independent per view.
"""

from typing import Tuple

import torch
from espnet2.asr.specaug.abs_specaug import AbsSpecAug
from espnet2.asr.specaug.specaug import SpecAug


def two_views(specaug: AbsSpecAug, feats: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two SpecAugment draws of every utterance of a batch.

    Args:
        specaug: the model's SpecAugment module.
        feats: (B, T, F) features (may be modified in place, as ESPnet's SpecAugment does).
        lengths: (B,) valid frames.

    Returns:
        ``(views (2B, T, F), view_lengths (2B,))``: rows b and B + b are the two views of utterance b.
    """
    if isinstance(specaug, SpecAug):
        if specaug.time_warp is not None:
            feats, lengths = specaug.time_warp(feats, lengths)
        views, view_lengths = torch.cat([feats, feats]), torch.cat([lengths, lengths])
        for mask in (specaug.freq_mask, specaug.time_mask):
            if mask is not None:
                views, view_lengths = mask(views, view_lengths)
        return views, view_lengths
    return specaug(torch.cat([feats, feats]), torch.cat([lengths, lengths]))
