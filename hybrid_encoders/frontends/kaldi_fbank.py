"""Kaldi-compatible log-mel filterbank frontend (``frontend: kaldi_fbank``), the features icefall models see.

icefall trains on lhotse ``Fbank`` features and decodes with kaldifeat (80 bins, ``snip_edges=False``,
``high_freq=-400``, dither 0, float waveforms in [-1, 1] without int16 rescaling) and normalises nothing globally.
To reuse an icefall checkpoint (``hybrid-encoders convert icefall-zipformer``) configure::

    frontend: kaldi_fbank
    frontend_conf: {fs: 16k}
    normalize: null
"""

from typing import Tuple, Union

import humanfriendly
import torch
import torchaudio.compliance.kaldi as kaldi
from espnet2.asr.frontend.abs_frontend import AbsFrontend

from hybrid_encoders.layers.masking import check_encoder_input


class KaldiFbankFrontend(AbsFrontend):
    """Per-utterance ``torchaudio.compliance.kaldi.fbank`` (Kaldi's ``compute-fbank-feats``) for a padded batch.

    Args:
        fs: sampling rate in Hz (int or a string such as ``"16k"``).
        n_mels: number of mel bins (output dimension).
        frame_length: window length in ms.
        frame_shift: hop in ms.
        low_freq: lowest mel-bin edge in Hz.
        high_freq: highest edge in Hz; <= 0 means Nyquist + high_freq (Kaldi convention).
        snip_edges: Kaldi's frame-placement rule; False gives ``round(num_samples / hop)`` frames.
        dither: Gaussian dither amplitude, used in training mode only (icefall inference uses 0).

    Shapes: ``forward(input (B, L) float waveform in [-1, 1], input_lengths (B,))`` ->
    ``(feats (B, T, n_mels), feats_lengths (B,))``, padded frames zero.
    """

    def __init__(
        self,
        fs: Union[int, str] = 16000,
        n_mels: int = 80,
        frame_length: float = 25.0,
        frame_shift: float = 10.0,
        low_freq: float = 20.0,
        high_freq: float = -400.0,
        snip_edges: bool = False,
        dither: float = 0.0,
    ):
        super().__init__()
        if isinstance(fs, str):
            fs = humanfriendly.parse_size(fs)
        sizes = (("fs", fs), ("n_mels", n_mels), ("frame_length", frame_length), ("frame_shift", frame_shift))
        for key, value in sizes:
            if not value > 0:
                raise ValueError(f"kaldi_fbank: {key} must be > 0, got {value!r}")
        if dither < 0:
            raise ValueError(f"kaldi_fbank: dither must be >= 0, got {dither!r}")
        nyquist = fs / 2
        upper = high_freq if high_freq > 0 else nyquist + high_freq
        if not 0 <= low_freq < upper <= nyquist:
            raise ValueError(
                f"kaldi_fbank: need 0 <= low_freq < high_freq <= fs/2, got low_freq={low_freq}, high_freq={high_freq} "
                f"(= {upper} Hz) for fs={fs}"
            )
        self.fs = int(fs)
        self.n_mels = n_mels
        self.options = dict(
            sample_frequency=float(fs),
            num_mel_bins=n_mels,
            frame_length=frame_length,
            frame_shift=frame_shift,
            low_freq=low_freq,
            high_freq=high_freq,
            snip_edges=snip_edges,
        )
        self.dither = dither
        # torchaudio needs at least one full window of samples (Kaldi itself would reflect shorter input)
        self.min_samples = int(fs * frame_length / 1000)

    def output_size(self) -> int:
        return self.n_mels

    def _check(self, input: torch.Tensor, input_lengths: torch.Tensor) -> None:
        if input.dim() != 2:
            raise ValueError(f"kaldi_fbank: input must be a (batch, samples) waveform, got shape {tuple(input.shape)}")
        # the encoders' own checks (dtype, lengths, NaN / Inf), on the waveform seen as 1-dim "features"
        check_encoder_input(input.unsqueeze(-1), input_lengths, 1, "kaldi_fbank")
        if input_lengths.numel() and int(input_lengths.min()) < self.min_samples:
            raise ValueError(
                f"kaldi_fbank: an utterance has {int(input_lengths.min())} samples, fewer than the "
                f"{self.min_samples} one frame needs"
            )

    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        self._check(input, input_lengths)
        dither = self.dither if self.training else 0.0
        features = [
            kaldi.fbank(input[b, : int(length)].unsqueeze(0).float(), dither=dither, **self.options)
            for b, length in enumerate(input_lengths)
        ]
        lengths = torch.tensor([f.size(0) for f in features], dtype=torch.long, device=input.device)
        feats = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)
        return feats.to(input.dtype), lengths
