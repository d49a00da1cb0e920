"""CR-CTC: consistency-regularised CTC (Yao et al., "CR-CTC: Consistency regularization on CTC for improved speech
recognition", ICLR 2025, arXiv 2410.05101; icefall ``zipformer/train.py --use-cr-ctc``).

Each training batch is encoded in two views that differ only in their SpecAugment draws; both views get the usual
losses (CTC, attention decoder, transducer), averaged over the views, and each view's CTC frame posteriors are pulled
towards the other view's, held fixed (stop-gradient). Evaluation and decoding see one view, as without CR-CTC.

* :mod:`~hybrid_encoders.crctc.loss`: the consistency loss on the (2B, T, V) CTC log-posteriors of the two views;
* :mod:`~hybrid_encoders.crctc.views`: the two augmented views of a (B, T, F) feature batch;
* :mod:`~hybrid_encoders.crctc.mixin`: the two-view training of any ``ESPnetASRModel`` subclass, shared by
  ``model: espnet_crctc`` and ``model: espnet_rnnt`` (``model_conf.cr_loss_scale``);
* :mod:`~hybrid_encoders.crctc.model`: ``model: espnet_crctc``, ESPnet's CTC or CTC/attention model with CR-CTC.
"""
