"""Transducer training and decoding in ESPnet's ``asr`` task without warp-transducer.

* :mod:`~hybrid_encoders.transducer.rnnt_loss`: the full RNN-T loss (torchaudio's kernel) behind input checks;
* :mod:`~hybrid_encoders.transducer.pruned_rnnt`: the pruned RNN-T loss (simple loss, pruning bounds, pruned loss);
* :mod:`~hybrid_encoders.transducer.stateless_decoder`: icefall's stateless prediction network as an ESPnet decoder;
* :mod:`~hybrid_encoders.transducer.model`: ``model: espnet_rnnt``, which trains either loss and decodes through
  ESPnet's own ``Speech2Text`` / ``BeamSearchTransducer``.
"""
