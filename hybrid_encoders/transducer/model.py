"""``model: espnet_rnnt``: RNN-T training in ESPnet's ``asr`` task without warp-transducer, full or pruned loss.

ESPnet's ``model: espnet`` imports ``warprnnt_pytorch`` as soon as it gets a joint network, and that package is not
on PyPI. This subclass of ``ESPnetASRModel`` (``ASRTask.build_model`` type-checks for it) hides the joint network
from the parent constructor, then sets the transducer attributes itself, so everything else of ESPnet runs
unchanged: the forward pass with its optional CTC / intermediate-CTC auxiliary losses
(``loss = loss_transducer + ctc_weight * loss_ctc``), the validation CER/WER through ``ErrorCalculatorTransducer``,
and decoding through ``Speech2Text`` / ``BeamSearchTransducer`` (``beam_size: 1`` is greedy search;
``transducer_conf: {search_type: ...}`` in the inference config selects the others).

Configuration (everything below lives in ``model_conf``; other keys go to ``ESPnetASRModel``):

* ``transducer_loss``: ``full`` (torchaudio's RNN-T loss on the whole (B, T, U+1, V) lattice, the default) or
  ``pruned`` (:mod:`hybrid_encoders.transducer.pruned_rnnt`, icefall's recipe loss);
* ``prune_range`` (5), ``lm_scale`` (0.25), ``am_scale`` (0.0): the pruned loss's window and smoothing;
* ``simple_loss_scale`` (0.5) and ``simple_loss_warmup_steps`` (2000): icefall's weighting. The simple-loss weight
  falls linearly from 1.0 to ``simple_loss_scale`` and the pruned-loss weight rises from 0.1 to 1.0 over the first
  ``simple_loss_warmup_steps`` optimizer updates; ``loss_transducer`` is their weighted sum;
* ``joint_net_conf``: the joint network's arguments (ESPnet's ``JointNetwork``: ``joint_space_size``,
  ``joint_activation_type``, ...) for decoders other than ``transducer``, e.g. ``decoder: stateless_transducer``,
  for which ESPnet builds no joint network. With ``decoder: transducer`` ESPnet builds it from the top-level
  ``joint_net_conf`` and this key must stay unset.

With ``cr_loss_scale`` > 0 (and ``ctc_weight`` > 0) the model trains with CR-CTC on its CTC head, icefall's
best system (docs/crctc.md): both losses on two SpecAugment views, plus ``cr_loss_scale`` times the consistency loss.

An attention-decoder auxiliary loss is not available: the ``asr`` task has a single decoder slot, which the
transducer decoder takes.

ESPnet never tells a model the training step, so the model counts its optimizer updates itself in the int64 buffer
``num_updates`` (:mod:`hybrid_encoders.step_counter`: once per update, not per forward pass under ``accum_grad``;
skipped non-finite steps do not count).
"""

from typing import Dict, Optional, Tuple

import torch

from espnet.nets.e2e_asr_common import ErrorCalculator
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.asr.transducer.error_calculator import ErrorCalculatorTransducer
from espnet2.asr_transducer.joint_network import JointNetwork
from espnet2.asr_transducer.utils import get_transducer_task_io
from espnet2.torch_utils.device_funcs import force_gatherable
from hybrid_encoders.crctc.mixin import ConsistencyRegularizedCTCMixin
from hybrid_encoders.step_counter import OptimizerStepCounter
from hybrid_encoders.transducer.pruned_rnnt import (
    check_smoothing_scales,
    prune_joint_inputs,
    prune_ranges,
    pruned_rnnt_loss,
    simple_rnnt_loss,
)
from hybrid_encoders.transducer.rnnt_loss import RNNTLoss

TRANSDUCER_LOSSES = ("full", "pruned")
DECODER_API = ("dunits", "blank_id", "set_device", "init_state", "score", "batch_score", "select_state")


class TransducerASRModel(ConsistencyRegularizedCTCMixin, ESPnetASRModel):
    """ESPnet ASR model with a transducer decoder trained by torchaudio's or our pruned RNN-T loss.

    Args:
        vocab_size, token_list, frontend, specaug, normalize, preencoder, encoder, postencoder, decoder, ctc:
            as ``ESPnetASRModel`` (built by ``ASRTask.build_model``). ``decoder`` must offer ESPnet's transducer
            decoder API (``transducer`` or ``stateless_transducer``).
        joint_network: built by ESPnet for ``decoder: transducer``, else None (then built here from
            ``joint_net_conf``).
        transducer_loss: ``full`` or ``pruned``.
        prune_range: labels kept per frame by the pruned loss (>= 2).
        lm_scale, am_scale: smoothing of the pruned loss's simple loss (>= 0, sum <= 1).
        simple_loss_scale: final weight of the simple loss (>= 0).
        simple_loss_warmup_steps: optimizer updates over which the weights move to their final values (>= 0).
        joint_net_conf: ``JointNetwork`` arguments for decoders other than ``transducer``.
        cr_loss_scale, cr_loss_warmup_steps: CR-CTC on the CTC head (off by default), see
            :class:`~hybrid_encoders.crctc.mixin.ConsistencyRegularizedCTCMixin`.
        report_cer, report_wer, sym_space, sym_blank: as ``ESPnetASRModel``.
        **kwargs: the other ``ESPnetASRModel`` options (``ctc_weight``, ``interctc_weight``, ...).
    """

    def __init__(
        self,
        vocab_size: int,
        token_list,
        frontend,
        specaug,
        normalize,
        preencoder,
        encoder,
        postencoder,
        decoder,
        ctc,
        joint_network: Optional[torch.nn.Module],
        transducer_loss: str = "full",
        prune_range: int = 5,
        lm_scale: float = 0.25,
        am_scale: float = 0.0,
        simple_loss_scale: float = 0.5,
        simple_loss_warmup_steps: int = 2000,
        joint_net_conf: Optional[Dict] = None,
        report_cer: bool = True,
        report_wer: bool = True,
        sym_space: str = "<space>",
        sym_blank: str = "<blank>",
        **kwargs,
    ):
        name = "model espnet_rnnt"
        if transducer_loss not in TRANSDUCER_LOSSES:
            raise ValueError(f"{name}: model_conf.transducer_loss must be one of {list(TRANSDUCER_LOSSES)}, got {transducer_loss!r}")
        if not isinstance(prune_range, int) or prune_range < 2:
            raise ValueError(
                f"{name}: model_conf.prune_range must be an integer >= 2 (the window must be able to move on to the "
                f"next label), got {prune_range!r}"
            )
        check_smoothing_scales(lm_scale, am_scale, prefix=f"{name}: model_conf.")
        if not simple_loss_scale >= 0.0:
            raise ValueError(f"{name}: model_conf.simple_loss_scale must be >= 0, got {simple_loss_scale}")
        if not isinstance(simple_loss_warmup_steps, int) or simple_loss_warmup_steps < 0:
            raise ValueError(f"{name}: model_conf.simple_loss_warmup_steps must be an integer >= 0, got {simple_loss_warmup_steps!r}")
        if kwargs.get("transducer_multi_blank_durations"):
            raise ValueError(
                f"{name}: model_conf.transducer_multi_blank_durations is not supported; ESPnet's own model: espnet "
                "trains multi-blank transducers without warp-transducer"
            )
        missing = [attribute for attribute in DECODER_API if not hasattr(decoder, attribute)]
        if decoder is None or missing:
            raise ValueError(
                f"{name}: needs a transducer decoder (decoder: transducer or stateless_transducer), got "
                f"{type(decoder).__name__}" + (f" without {', '.join(missing)}" if decoder is not None else "")
            )
        if encoder is None:
            raise ValueError(f"{name}: needs an encoder (set encoder:)")
        if joint_network is not None and joint_net_conf is not None:
            raise ValueError(
                f"{name}: model_conf.joint_net_conf is for decoders without an ESPnet joint network; with decoder: "
                "transducer set the top-level joint_net_conf instead"
            )
        super().__init__(
            vocab_size=vocab_size,
            token_list=token_list,
            frontend=frontend,
            specaug=specaug,
            normalize=normalize,
            preencoder=preencoder,
            encoder=encoder,
            postencoder=postencoder,
            decoder=decoder,
            ctc=ctc,
            joint_network=None,  # the parent would import warprnnt_pytorch for a joint network
            report_cer=report_cer,
            report_wer=report_wer,
            sym_space=sym_space,
            sym_blank=sym_blank,
            **kwargs,
        )
        if decoder.blank_id != self.blank_id:
            raise ValueError(
                f"{name}: the decoder's blank_id={decoder.blank_id} differs from the token list's "
                f"{sym_blank!r} id {self.blank_id}; set decoder_conf.blank_id: {self.blank_id}"
            )
        encoder_size = postencoder.output_size() if postencoder is not None else encoder.output_size()
        if joint_network is None:
            joint_network = JointNetwork(vocab_size, encoder_size, decoder.dunits, **(joint_net_conf or {}))
        # What the parent's transducer branch sets, without the warp-transducer criterion.
        del self.criterion_att
        self.decoder = decoder  # the parent drops it when ctc_weight == 1.0, meaningless for a transducer
        self.joint_network = joint_network
        self.use_transducer_decoder = True
        # The CTC head's validation CER (cer_ctc, cer_interctc_layer*). ESPnet's transducer branch builds this
        # calculator only when no CER/WER is reported, so with reporting on the log said cer_ctc=nan every epoch.
        self.error_calculator = (
            ErrorCalculator(token_list, sym_space, sym_blank, report_cer, report_wer)
            if self.ctc is not None and (report_cer or report_wer)
            else None
        )
        self.error_calculator_trans = (
            ErrorCalculatorTransducer(
                decoder, joint_network, token_list, sym_space, sym_blank, report_cer=report_cer, report_wer=report_wer
            )
            if report_cer or report_wer
            else None
        )
        self.transducer_loss = transducer_loss
        if transducer_loss == "full":
            self.criterion_transducer = RNNTLoss(blank=self.blank_id)
        else:
            # The trivial joiner of the simple loss: linear maps to the vocabulary, saved with the model.
            self.simple_am_proj = torch.nn.Linear(encoder_size, vocab_size)
            self.simple_lm_proj = torch.nn.Linear(decoder.dunits, vocab_size)
        self.prune_range = prune_range
        self.lm_scale = lm_scale
        self.am_scale = am_scale
        self.simple_loss_scale = simple_loss_scale
        self.simple_loss_warmup_steps = simple_loss_warmup_steps
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))
        self._step_counter = OptimizerStepCounter()
        self._step_counter.attach(self, "num_updates")  # checkpoints include the update after the last forward
        self._loss_parts: Dict[str, torch.Tensor] = {}

    def loss_scales(self) -> Tuple[float, float]:
        """(simple-loss weight, pruned-loss weight) after ``num_updates`` updates (icefall's linear warm-up)."""
        if self.simple_loss_warmup_steps == 0:
            progress = 1.0
        else:
            progress = min(int(self.num_updates) / self.simple_loss_warmup_steps, 1.0)
        return 1.0 - progress * (1.0 - self.simple_loss_scale), 0.1 + 0.9 * progress

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """ESPnet's forward; with the pruned loss the stats also hold ``loss_simple`` and ``loss_pruned``."""
        self._loss_parts = {}
        if self.training:
            self._step_counter.advance(self.num_updates, self.parameters())
        loss, stats, weight = super().forward(speech, speech_lengths, text, text_lengths, **kwargs)
        if self._loss_parts:
            stats.update(force_gatherable(self._loss_parts, loss.device))
        if self.error_calculator is None:  # CER reporting is off: no always-nan CTC CER columns
            for key in [key for key in stats if key.startswith(("cer_ctc", "cer_interctc"))]:
                del stats[key]
        return loss, stats, weight

    def _calc_transducer_loss(
        self, encoder_out: torch.Tensor, encoder_out_lens: torch.Tensor, labels: torch.Tensor
    ) -> Tuple[torch.Tensor, Optional[float], Optional[float]]:
        """Transducer loss and, in evaluation, CER/WER by beam search.

        Args:
            encoder_out: (B, T, D_enc); encoder_out_lens: (B,); labels: (B, L) padded with ``ignore_id``.

        Returns:
            loss (scalar, mean over the batch), CER, WER (None while training).
        """
        decoder_in, target, t_len, u_len = get_transducer_task_io(
            labels, encoder_out_lens, ignore_id=self.ignore_id, blank_id=self.blank_id
        )
        self.decoder.set_device(encoder_out.device)
        decoder_out = self.decoder(decoder_in)  # (B, U+1, D_dec)
        if self.transducer_loss == "full":
            joint_out = self.joint_network(encoder_out.unsqueeze(2), decoder_out.unsqueeze(1))
            loss = self.criterion_transducer(joint_out, target, t_len, u_len)
        else:
            loss = self._pruned_loss(encoder_out, decoder_out, target, t_len, u_len)
        cer, wer = None, None
        if not self.training and self.error_calculator_trans is not None:
            cer, wer = self.error_calculator_trans(encoder_out, target)
        return loss, cer, wer

    def _pruned_loss(self, encoder_out, decoder_out, target, t_len, u_len) -> torch.Tensor:
        """icefall's weighted sum of the simple and the pruned RNN-T losses (both in float32)."""
        simple_loss, (px_occupation, py_occupation) = simple_rnnt_loss(
            self.simple_lm_proj(decoder_out).float(),
            self.simple_am_proj(encoder_out).float(),
            target,
            u_len,
            t_len,
            blank=self.blank_id,
            lm_scale=self.lm_scale,
            am_scale=self.am_scale,
            return_occupation=True,
        )
        ranges = prune_ranges(px_occupation, py_occupation, u_len, t_len, self.prune_range)
        am_pruned, lm_pruned = prune_joint_inputs(
            self.joint_network.lin_enc(encoder_out), self.joint_network.lin_dec(decoder_out), ranges
        )
        logits = self.joint_network(am_pruned, lm_pruned, no_projection=True)
        pruned_loss = pruned_rnnt_loss(logits.float(), target, ranges, u_len, t_len, blank=self.blank_id)
        simple_weight, pruned_weight = self.loss_scales()
        self._loss_parts = {"loss_simple": simple_loss.detach(), "loss_pruned": pruned_loss.detach()}
        return simple_weight * simple_loss + pruned_weight * pruned_loss
