"""Two-view CR-CTC training for any subclass of ESPnet's ``ESPnetASRModel`` (Yao et al., ICLR 2025).

One implementation serves ``model: espnet_crctc`` (CTC, CTC/attention) and ``model: espnet_rnnt`` (pruned
transducer + CR-CTC on the CTC head, icefall's best system). It hooks three of ESPnet's template methods and leaves
the rest of ESPnet's forward as it is:

* ``forward`` stacks the batch twice (rows b and B + b are utterance b) and runs ESPnet's forward on the 2B rows, so
  every loss ESPnet computes (CTC, intermediate CTC, attention decoder, transducer) is the mean over the 2B rows, i.e.
  the mean of the two views' losses: icefall runs its encoder and all heads on the doubled batch too and scales the
  summed losses by 0.5. It then adds ``cr_loss_weight() * consistency_loss`` on the CTC posteriors of the final
  encoder output (icefall: ``loss += cr_loss_scale * cr_loss``, beside ``ctc_loss_scale * ctc_loss``);
* ``_extract_feats`` runs the frontend once on the B utterances and draws the two SpecAugment views
  (:func:`~hybrid_encoders.crctc.views.two_views`); ESPnet's own SpecAugment step is skipped for that pass
  (``self.specaug`` is None while it runs, and restored afterwards, also on errors);
* ``encode`` keeps the final encoder output of the pass for the consistency loss.

Evaluation (validation loss, ``Speech2Text``) runs ESPnet's single-view forward and ``encode`` unchanged: with two
identical un-augmented views, as icefall validates, the consistency loss would be 0 and the other losses the same.

The CR weight ramps linearly from 0 to ``cr_loss_scale`` over ``cr_loss_warmup_steps`` optimizer updates (icefall
since its PR #2075, over its ``warm_step`` of 2000 batches, to keep the loss from diverging early; the published
CR-CTC results were trained without the ramp: ``cr_loss_warmup_steps: 0``). The model class counts the updates in
its int64 buffer ``num_updates`` (:mod:`hybrid_encoders.step_counter`), advanced before this forward runs:
``model: espnet_rnnt`` does for its own warm-up, ``model: espnet_crctc`` for this one.
"""

from typing import Dict, Optional, Tuple

import torch
from espnet2.asr.specaug.abs_specaug import AbsSpecAug
from espnet2.torch_utils.device_funcs import force_gatherable

from hybrid_encoders.crctc.loss import consistency_loss
from hybrid_encoders.crctc.views import two_views


class ConsistencyRegularizedCTCMixin:
    """CR-CTC training for an ``ESPnetASRModel`` subclass; put it first among the bases. The subclass keeps the
    optimizer-update count in a ``num_updates`` buffer (read by :meth:`cr_loss_weight`).

    Args:
        cr_loss_scale: weight of the consistency loss (>= 0), added to the model's loss; 0 turns CR-CTC off (one view,
            the parent model exactly). icefall: 0.2 with CTC alone, 0.02 with the attention decoder or transducer
            (beside a CTC weight of 0.1).
        cr_loss_warmup_steps: optimizer updates over which the weight rises linearly from 0 to ``cr_loss_scale``
            (>= 0; 0: no ramp).
        *args, **kwargs: the parent model's arguments.

    Raises:
        ValueError: a bad value, or CR-CTC without what it needs (a CTC head, a SpecAugment module), naming the key.

    Training forward with CR-CTC: as ``ESPnetASRModel.forward`` (speech (B, L[, D]), speech_lengths (B,), text (B,
    U), text_lengths (B,)); the stats gain ``loss_cr`` (unscaled, per utterance) and ``loss`` includes the weighted
    CR term; the returned weight is B.
    """

    def __init__(self, *args, cr_loss_scale: float = 0.0, cr_loss_warmup_steps: int = 2000, **kwargs):
        super().__init__(*args, **kwargs)
        name = f"{type(self).__name__}: model_conf"
        is_number = isinstance(cr_loss_scale, (int, float)) and not isinstance(cr_loss_scale, bool)
        if not (is_number and 0.0 <= cr_loss_scale < float("inf")):
            raise ValueError(f"{name}.cr_loss_scale must be a number >= 0, got {cr_loss_scale!r}")
        if type(cr_loss_warmup_steps) is not int or cr_loss_warmup_steps < 0:
            raise ValueError(f"{name}.cr_loss_warmup_steps must be an integer >= 0, got {cr_loss_warmup_steps!r}")
        if cr_loss_scale > 0:
            if self.ctc is None:
                raise ValueError(f"{name}.cr_loss_scale > 0 regularises the CTC head: set model_conf.ctc_weight > 0")
            if self.specaug is None:
                raise ValueError(
                    f"{name}.cr_loss_scale > 0 needs a SpecAugment module: the two views differ only in their masks "
                    "(set specaug: specaug and specaug_conf, see docs/crctc.md)"
                )
            if self.aux_ctc:
                raise ValueError(f"{name}.aux_ctc is not supported with cr_loss_scale > 0")
        self.cr_loss_scale = float(cr_loss_scale)
        self.cr_loss_warmup_steps = cr_loss_warmup_steps
        # Set only during a two-view forward: (B, the SpecAugment module), and the final encoder output (2B, T, D)
        # with its lengths (2B,).
        self._two_view_pass: Optional[Tuple[int, AbsSpecAug]] = None
        self._view_encoder_out: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def cr_loss_weight(self) -> float:
        """The consistency loss's weight after ``num_updates`` optimizer updates."""
        if self.cr_loss_warmup_steps == 0:
            return self.cr_loss_scale
        return self.cr_loss_scale * min(int(self.num_updates) / self.cr_loss_warmup_steps, 1.0)

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """The parent's forward; in training with ``cr_loss_scale > 0``, on two views plus the consistency loss."""
        if not (self.training and self.cr_loss_scale > 0):
            return super().forward(speech, speech_lengths, text, text_lengths, **kwargs)
        batch = speech.size(0)
        specaug = self.specaug
        self.specaug = None  # _extract_feats draws the views; ESPnet's encode must not augment them again
        self._two_view_pass = (batch, specaug)
        try:
            loss, stats, _ = super().forward(
                torch.cat([speech, speech]),
                torch.cat([speech_lengths, speech_lengths]),
                torch.cat([text, text]),
                torch.cat([text_lengths, text_lengths]),
                **kwargs,
            )
            encoder_out, encoder_out_lens = self._view_encoder_out
        finally:
            self.specaug = specaug
            self._two_view_pass = None
            self._view_encoder_out = None
        loss_cr = consistency_loss(self.ctc.log_softmax(encoder_out), encoder_out_lens)
        loss = loss + self.cr_loss_weight() * loss_cr
        stats.update(loss_cr=loss_cr.detach(), loss=loss.detach())
        return force_gatherable((loss, stats, batch), loss.device)

    def _extract_feats(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The parent's features; in a two-view pass, the two views (2B, T, F) of the first B rows' features."""
        if self._two_view_pass is None:
            return super()._extract_feats(speech, speech_lengths)
        batch, specaug = self._two_view_pass
        feats, feats_lengths = super()._extract_feats(speech[:batch], speech_lengths[:batch])
        return two_views(specaug, feats, feats_lengths)

    def encode(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        """The parent's ``encode``; in a two-view pass it also keeps the final encoder output for the CR loss."""
        encoder_out, encoder_out_lens = super().encode(speech, speech_lengths)
        if self._two_view_pass is not None:
            final = encoder_out[0] if isinstance(encoder_out, tuple) else encoder_out  # (out, intermediate outs)
            self._view_encoder_out = (final, encoder_out_lens)
        return encoder_out, encoder_out_lens
