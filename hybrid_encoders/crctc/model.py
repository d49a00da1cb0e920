"""``model: espnet_crctc``: ESPnet's CTC or CTC/attention ASR model trained with CR-CTC (Yao et al., "CR-CTC:
Consistency regularization on CTC for improved speech recognition", ICLR 2025, arXiv 2410.05101).

A subclass of ``ESPnetASRModel`` (``ASRTask.build_model`` type-checks for it) with the two-view training of
:class:`~hybrid_encoders.crctc.mixin.ConsistencyRegularizedCTCMixin`. The training loss is ESPnet's, averaged over
the two views, plus the weighted consistency loss:

    loss = ctc_weight * loss_ctc + (1 - ctc_weight) * loss_att + cr_loss_weight * loss_cr

Everything else is ``ESPnetASRModel``'s: the state dict (plus the int64 buffer ``num_updates``, the optimizer
updates counted for the CR weight's warm-up, :mod:`hybrid_encoders.step_counter`), validation, and decoding through
ESPnet's unmodified ``Speech2Text`` (``asr_inference``, any CTC or joint CTC/attention decoding config).

icefall's settings in these terms (``model_conf``): CTC alone ``ctc_weight: 1.0, cr_loss_scale: 0.2`` (icefall sets
its CTC scale to 1.0 without other heads); with the attention decoder ``ctc_weight: 0.1, cr_loss_scale: 0.02``
(icefall ``--ctc-loss-scale 0.1 --attention-decoder-loss-scale 0.9 --cr-loss-scale 0.02``). The two views need the
SpecAugment with the paper's larger time masking in ``specaug_conf`` (conf/crctc/, docs/crctc.md).
"""

import torch
from espnet2.asr.espnet_model import ESPnetASRModel

from hybrid_encoders.crctc.mixin import ConsistencyRegularizedCTCMixin
from hybrid_encoders.step_counter import OptimizerStepCounter


class CRCTCASRModel(ConsistencyRegularizedCTCMixin, ESPnetASRModel):
    """ESPnet's CTC / CTC-attention model with consistency-regularised CTC.

    Args:
        cr_loss_scale: weight of the consistency loss (0.2, the paper's; 0 trains exactly as ``model: espnet``).
        cr_loss_warmup_steps: optimizer updates over which that weight ramps up from 0 (2000; 0: none).
        **kwargs: ``ESPnetASRModel``'s arguments (built by ``ASRTask.build_model``: vocab_size, token_list, frontend,
            specaug, normalize, preencoder, encoder, postencoder, decoder, ctc, joint_network, and ``model_conf``'s
            ctc_weight, interctc_weight, lsm_weight, ...).

    Raises:
        ValueError: a transducer decoder (use ``model: espnet_rnnt`` with ``cr_loss_scale``), or the mixin's errors.
    """

    def __init__(self, cr_loss_scale: float = 0.2, cr_loss_warmup_steps: int = 2000, **kwargs):
        if kwargs.get("joint_network") is not None:
            raise ValueError(
                "model espnet_crctc: a transducer decoder (joint network) is not supported here; for a transducer "
                "with CR-CTC use model: espnet_rnnt with model_conf.cr_loss_scale"
            )
        super().__init__(cr_loss_scale=cr_loss_scale, cr_loss_warmup_steps=cr_loss_warmup_steps, **kwargs)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))
        self._step_counter = OptimizerStepCounter()
        self._step_counter.attach(self, "num_updates")  # checkpoints include the update after the last forward

    def forward(self, *args, **kwargs):
        """Count the optimizer update (training), then the mixin's forward (``ESPnetASRModel.forward``'s arguments)."""
        if self.training:
            self._step_counter.advance(self.num_updates, self.parameters())
        return super().forward(*args, **kwargs)
