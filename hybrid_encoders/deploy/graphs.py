"""The modules that are traced into ONNX graphs: thin views of a trained ESPnet model, sharing its parameters.

Every graph starts from the features the model's frontend computes (``(N, T, F)`` log-mel frames, padded, plus
``(N,)`` lengths), not from the waveform: the frontend stays outside (``frontend.yaml`` records it exactly), while
the feature normalisation is inside, so a graph's input is what the frontend produces and nothing else.

========================  =====================================================  ==============================
graph                     inputs                                                 outputs
========================  =====================================================  ==============================
:class:`CtcGraph`         ``x`` (N, T, F) float32, ``x_lens`` (N,) int64         ``log_probs`` (N, T', V),
                                                                                 ``log_probs_len`` (N,) int64
:class:`EncoderGraph`     ``x``, ``x_lens`` as above                             ``encoder_out`` (N, T', J),
                                                                                 ``encoder_out_lens`` (N,) int64
:class:`DecoderGraph`     ``y`` (N, context_size) int64, -1 = before the start   ``decoder_out`` (N, J)
:class:`JoinerGraph`      ``encoder_out`` (N, J), ``decoder_out`` (N, J)         ``logit`` (N, V)
========================  =====================================================  ==============================

The names and the projection split (encoder and decoder outputs already projected to the joint space J, the joiner
only adds, applies the activation and the output layer) are the convention of icefall's transducer exports, which
sherpa-onnx reads.
"""

from typing import Optional, Tuple

import torch
from torch import nn

from hybrid_encoders.layers.masking import make_pad_mask


class FeatureNormalization(nn.Module):
    """ESPnet's ``GlobalMVN`` as plain tensor arithmetic: ``(x - mean) / std``, padded frames set to 0.

    (ESPnet's own module builds its padding mask with ``lengths.tolist()``, which a tracer freezes to the example's
    lengths.) ``mean`` and ``std`` are (F,) buffers copied from the trained module; ``None`` means no normalisation.
    """

    def __init__(self, mean: Optional[torch.Tensor], std: Optional[torch.Tensor]):
        super().__init__()
        self.register_buffer("mean", None if mean is None else mean.detach().clone().float())
        self.register_buffer("std", None if std is None else std.detach().clone().float())

    @classmethod
    def from_espnet(cls, normalize: Optional[nn.Module]) -> "FeatureNormalization":
        """From a model's ``normalize`` module (``GlobalMVN`` or None)."""
        if normalize is None:
            return cls(None, None)
        mean = normalize.mean if normalize.norm_means else None
        std = normalize.std if normalize.norm_vars else None
        return cls(mean, std)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(N, T, F), (N,) -> (N, T, F)."""
        if self.mean is None and self.std is None:
            return x
        return self.normalize_frames(x).masked_fill(make_pad_mask(lengths, x.size(1)).unsqueeze(-1), 0.0)

    def normalize_frames(self, x: torch.Tensor) -> torch.Tensor:
        """(..., F) -> (..., F), every frame normalised (no padding)."""
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return x


def run_encoder(encoder: nn.Module, ctc: Optional[nn.Module], x: torch.Tensor, lengths: torch.Tensor):
    """The encoder call of ``ESPnetASRModel.encode``: (N, T, F), (N,) -> (N, T', D), (N,) int64.

    Self-conditioned intermediate CTC (``interctc_use_conditioning``) needs the CTC module; intermediate outputs
    are dropped (only the last layer feeds the heads).
    """
    if getattr(encoder, "interctc_use_conditioning", False):
        encoded, encoded_lengths, _ = encoder(x, lengths, ctc=ctc)
    else:
        encoded, encoded_lengths, _ = encoder(x, lengths)
    if isinstance(encoded, tuple):
        encoded = encoded[0]
    return encoded, encoded_lengths.long()


class CtcGraph(nn.Module):
    """Normalisation + encoder + CTC head: features -> per-frame log-probabilities over the vocabulary."""

    def __init__(self, normalization: FeatureNormalization, encoder: nn.Module, ctc: nn.Module):
        super().__init__()
        self.normalization = normalization
        self.encoder = encoder
        self.ctc = ctc

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        encoded, lengths = run_encoder(self.encoder, self.ctc, self.normalization(x, x_lens), x_lens)
        return self.ctc.log_softmax(encoded), lengths


class EncoderGraph(nn.Module):
    """Normalisation + encoder + the joint network's encoder projection (transducer encoder)."""

    def __init__(
        self, normalization: FeatureNormalization, encoder: nn.Module, projection: nn.Linear, ctc: Optional[nn.Module]
    ):
        super().__init__()
        self.normalization = normalization
        self.encoder = encoder
        self.projection = projection
        self.ctc = ctc

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        encoded, lengths = run_encoder(self.encoder, self.ctc, self.normalization(x, x_lens), x_lens)
        return self.projection(encoded), lengths


class DecoderGraph(nn.Module):
    """Stateless decoder on the last ``context_size`` labels + the joint network's decoder projection."""

    def __init__(self, decoder: nn.Module, projection: nn.Linear):
        super().__init__()
        self.decoder = decoder
        self.projection = projection

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        # the decoder's training call gives one output per prefix; the last one reads exactly the N contexts
        return self.projection(self.decoder(y)[:, -1])


class JoinerGraph(nn.Module):
    """The joint network after both projections: ``lin_out(activation(encoder_out + decoder_out))``."""

    def __init__(self, joint_network: nn.Module):
        super().__init__()
        self.joint_network = joint_network

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        return self.joint_network(encoder_out, decoder_out, no_projection=True)
