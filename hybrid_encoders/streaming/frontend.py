"""Feature extraction fed audio in pieces: the same frames as the model's front end on the whole utterance.

An ESPnet ASR model turns a waveform into encoder input with ``frontend`` then ``normalize``. Both front ends this
module supports cut the signal into frames of ``F`` samples every ``hop`` samples, reflecting the signal at its two
ends, and compute each frame on its own; the normalisation (``global_mvn``) works frame by frame too. So a frame
can be computed as soon as the samples it covers have arrived, and the frames near the end, which read the
reflected tail, once the utterance is known to be over (:meth:`StreamingFeatures.finalize`):

==========================  =====================================  =====================  ========================
front end                   frame ``t`` covers samples             reflection at the ends  frames for ``L`` samples
==========================  =====================================  =====================  ========================
``default``, center: true   ``[t*hop - n_fft//2, ... + n_fft)``    ``x[-1] = x[1]``        ``1 + L // hop``
``default``, center: false  ``[t*hop, t*hop + n_fft)``             none                    ``1 + (L - n_fft) // hop``
``kaldi_fbank``             ``[t*hop + hop//2 - win//2, ... win)`` ``x[-1] = x[0]``        ``(L + hop // 2) // hop``
==========================  =====================================  =====================  ========================

(``torch.stft``'s ``reflect`` padding for ESPnet's ``Stft``; Kaldi's ``snip_edges: false`` rule, as
``torchaudio.compliance.kaldi`` implements it.) The frames are computed by the very same functions the full
computation uses (``torch.stft`` and ESPnet's ``LogMel``; ``torchaudio.compliance.kaldi.fbank``), on the samples of
the frames at hand, so streaming and full features agree to float32 rounding (the FFT of a frame may round
differently in a batch of another size).

The reference is one utterance at a time, as ``asr_inference`` (batch size 1) computes it: in a padded batch ESPnet's
``Stft`` reflects a shorter utterance's zero padding instead of its last samples.

Pieces may have any size (one sample, 10 ms, a second). Memory is bounded: the buffer keeps only the samples the
next frames need (less than one frame plus one piece).
"""

import copy
from typing import Optional

import torch
import torchaudio.compliance.kaldi as kaldi
from espnet2.asr.frontend.default import DefaultFrontend
from espnet2.layers.global_mvn import GlobalMVN

from hybrid_encoders.frontends.kaldi_fbank import KaldiFbankFrontend


class TooShortAudioError(ValueError):
    """An utterance with fewer samples than one frame of the front end needs."""


class StreamingFeatures:
    """Incremental framing of one audio stream; subclasses compute the frames.

    Args:
        sample_rate: the rate (Hz) the model was trained on; other rates are rejected.
        frame_length: samples per frame ``F``.
        hop_length: samples between frame starts.
        first_frame_start: sample index where frame 0 starts (negative: it starts in the reflected head).
        reflect_repeats_edge: True for Kaldi's reflection (``x[-1] = x[0]``), False for ``torch.stft``'s
            (``x[-1] = x[1]``).
        normalize: ESPnet's ``global_mvn`` module of the model, or None (a CPU copy is used).

    Features are computed on the CPU, whatever the model's device (a few frames at a time: not worth a GPU).

    Use: :meth:`accept_waveform` with each piece -> the new frames ``(T_new, D)``; :meth:`finalize` -> the last
    frames; :meth:`reset` to start another utterance.
    """

    def __init__(
        self,
        sample_rate: int,
        frame_length: int,
        hop_length: int,
        first_frame_start: int,
        reflect_repeats_edge: bool,
        normalize: Optional[GlobalMVN],
    ):
        self.sample_rate = int(sample_rate)
        self.frame_length = frame_length
        self.hop_length = hop_length
        self.first_frame_start = first_frame_start
        self.edge = 1 if reflect_repeats_edge else 0
        self.normalize = copy.deepcopy(normalize).cpu() if normalize is not None else None
        self.reset()

    # --- what subclasses define -------------------------------------------------------------------------------
    def num_frames(self, num_samples: int) -> int:
        """Frames of an utterance of ``num_samples`` samples (the full computation's count)."""
        raise NotImplementedError

    def min_samples(self) -> int:
        """Fewest samples an utterance may have (the full computation rejects shorter ones)."""
        raise NotImplementedError

    def _compute(self, signal: torch.Tensor, count: int) -> torch.Tensor:
        """Features ``(count, D)`` of the frames ``signal[k*hop : k*hop + F]``, k < count, before normalisation."""
        raise NotImplementedError

    # --- the stream --------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the current utterance."""
        self.buffer = torch.zeros(0)
        self.buffer_start = 0  # sample index of buffer[0]
        self.received = 0
        self.next_frame = 0
        self.finished = False

    def accept_waveform(self, samples: torch.Tensor, sample_rate: Optional[int] = None) -> torch.Tensor:
        """Append a piece of audio; returns the frames it completed.

        Args:
            samples: (N,) float waveform (the scale the model was trained on, [-1, 1] for ESPnet's sound files).
            sample_rate: the piece's rate in Hz; checked against the model's when given.

        Returns:
            (T_new, D) normalised features, T_new >= 0.

        Raises:
            ValueError: a piece after :meth:`finalize`, a wrong sample rate, or not a 1-D float waveform.
        """
        if self.finished:
            raise ValueError("streaming features: a piece of audio after finalize(); call reset() to start a new one")
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            raise ValueError(
                f"streaming features: audio at {sample_rate} Hz, but the model's front end expects "
                f"{self.sample_rate} Hz; resample it first"
            )
        samples = torch.as_tensor(samples)
        if samples.dim() != 1 or not samples.is_floating_point():
            raise ValueError(
                f"streaming features: samples must be a 1-D float waveform (mono), got a {samples.dtype} tensor of "
                f"shape {tuple(samples.shape)}"
            )
        self.buffer = torch.cat((self.buffer, samples.detach().float().cpu()))
        self.received += samples.numel()
        ready = self.next_frame
        while self._last_sample_needed(ready) < self.received and ready < self.num_frames(self.received):
            ready += 1
        return self._emit(ready)

    def finalize(self) -> torch.Tensor:
        """The utterance is over: the remaining frames, those that read the reflected tail.

        Returns:
            (T_rest, D) normalised features.

        Raises:
            ValueError: called twice; TooShortAudioError (a ValueError): an utterance shorter than the front end's
                minimum.
        """
        if self.finished:
            raise ValueError("streaming features: finalize() called twice; call reset() to start a new utterance")
        if self.received < self.min_samples():
            raise TooShortAudioError(
                f"streaming features: the utterance has {self.received} samples, fewer than the {self.min_samples()} "
                "the front end needs for one frame"
            )
        self.finished = True
        return self._emit(self.num_frames(self.received))

    def _frame_start(self, frame: int) -> int:
        return frame * self.hop_length + self.first_frame_start

    def _last_sample_needed(self, frame: int) -> int:
        """Largest sample index frame ``frame`` reads while the end is unknown (its head reflection included)."""
        start = self._frame_start(frame)
        last = start + self.frame_length - 1
        return max(last, -start - self.edge) if start < 0 else last

    def _source_index(self, positions: torch.Tensor) -> torch.Tensor:
        """Sample index each (possibly out-of-range) position reads, reflecting at 0 and, once final, at the end."""
        positions = torch.where(positions < 0, -positions - self.edge, positions)
        if self.finished:
            end = self.received
            positions = torch.where(positions >= end, 2 * end - 2 + self.edge - positions, positions)
        return positions

    def _emit(self, stop: int) -> torch.Tensor:
        """Compute frames ``next_frame .. stop - 1``, then drop the samples no later frame reads."""
        count = stop - self.next_frame
        if count <= 0:
            return torch.zeros(0, self.dim)
        start = self._frame_start(self.next_frame)
        positions = torch.arange(start, self._frame_start(stop - 1) + self.frame_length)
        signal = self.buffer[self._source_index(positions) - self.buffer_start]
        feats = self._compute(signal, count)
        if self.normalize is not None:
            feats, _ = self.normalize(feats.unsqueeze(0), torch.tensor([count]))
            feats = feats[0]
        self.next_frame = stop
        # Later frames read from their start on, and the final ones reflect at most a frame's samples before the end.
        keep_from = max(0, min(self._frame_start(stop), self.received - self.frame_length))
        if keep_from > self.buffer_start:
            self.buffer = self.buffer[keep_from - self.buffer_start :]
            self.buffer_start = keep_from
        return feats


class EspnetStftFeatures(StreamingFeatures):
    """ESPnet's ``frontend: default`` (STFT power spectrum -> ``LogMel``) followed by the model's normalisation.

    Args:
        frontend: the model's ``DefaultFrontend`` (its ``n_fft``, ``win_length``, ``hop_length``, ``window``,
            ``center``, ``normalized``, ``onesided`` and mel filterbank are used as they are).
        normalize: the model's ``global_mvn`` module or None.
    """

    def __init__(self, frontend: DefaultFrontend, normalize: Optional[GlobalMVN]):
        stft = frontend.stft
        self.stft = stft
        self.logmel = copy.deepcopy(frontend.logmel).cpu()
        self.dim = frontend.output_size()
        super().__init__(
            sample_rate=frontend.logmel.mel_options["sr"],
            frame_length=stft.n_fft,
            hop_length=stft.hop_length,
            first_frame_start=-(stft.n_fft // 2) if stft.center else 0,
            reflect_repeats_edge=False,
            normalize=normalize,
        )

    def num_frames(self, num_samples: int) -> int:
        padded = num_samples + 2 * (self.stft.n_fft // 2) if self.stft.center else num_samples
        return max(0, (padded - self.stft.n_fft) // self.stft.hop_length + 1)

    def min_samples(self) -> int:
        # torch.stft's reflect padding needs more samples than it pads; without it one frame needs n_fft samples
        return self.stft.n_fft // 2 + 1 if self.stft.center else self.stft.n_fft

    def _compute(self, signal: torch.Tensor, count: int) -> torch.Tensor:
        window = None
        if self.stft.window is not None:
            window = getattr(torch, f"{self.stft.window}_window")(self.stft.win_length, dtype=signal.dtype)
        spectrum = torch.stft(
            signal,
            n_fft=self.stft.n_fft,
            hop_length=self.stft.hop_length,
            win_length=self.stft.win_length,
            window=window,
            center=False,
            normalized=self.stft.normalized,
            onesided=self.stft.onesided,
            return_complex=True,
        )  # (freq, frames)
        spectrum = torch.view_as_real(spectrum).transpose(0, 1)[:count]  # (frames, freq, 2)
        power = spectrum[..., 0] ** 2 + spectrum[..., 1] ** 2
        feats, _ = self.logmel(power.unsqueeze(0))
        return feats[0]


class KaldiFbankFeatures(StreamingFeatures):
    """Our ``frontend: kaldi_fbank`` (``torchaudio.compliance.kaldi.fbank``, ``snip_edges: false``), then the model's
    normalisation (usually none for icefall models).

    Args:
        frontend: the model's ``KaldiFbankFrontend``.
        normalize: the model's ``global_mvn`` module or None.
    """

    def __init__(self, frontend: KaldiFbankFrontend, normalize: Optional[GlobalMVN]):
        self.options = dict(frontend.options, snip_edges=True, dither=0.0)
        self.dim = frontend.output_size()
        self._min_samples = frontend.min_samples
        frame_length = int(frontend.fs * frontend.options["frame_length"] / 1000)
        hop_length = int(frontend.fs * frontend.options["frame_shift"] / 1000)
        if frontend.options["snip_edges"]:
            first_frame_start = 0
        else:
            first_frame_start = hop_length // 2 - frame_length // 2
        self.snip_edges = frontend.options["snip_edges"]
        super().__init__(frontend.fs, frame_length, hop_length, first_frame_start, True, normalize)

    def num_frames(self, num_samples: int) -> int:
        if self.snip_edges:
            return max(0, (num_samples - self.frame_length) // self.hop_length + 1)
        return (num_samples + self.hop_length // 2) // self.hop_length

    def min_samples(self) -> int:
        return self._min_samples

    def _compute(self, signal: torch.Tensor, count: int) -> torch.Tensor:
        return kaldi.fbank(signal.unsqueeze(0), **self.options)[:count]


def streaming_features(model: torch.nn.Module) -> StreamingFeatures:
    """The streaming counterpart of an ESPnet ASR model's ``frontend`` + ``normalize``.

    Args:
        model: an ``ESPnetASRModel`` (or subclass) in eval mode.

    Raises:
        ValueError: a front end or normalisation that cannot be computed incrementally, naming it.
    """
    frontend, normalize = model.frontend, model.normalize
    if normalize is not None and not isinstance(normalize, GlobalMVN):
        raise ValueError(
            f"streaming: normalize: {type(normalize).__name__} needs the whole utterance; only global_mvn (or none) "
            "works chunk by chunk"
        )
    if isinstance(frontend, KaldiFbankFrontend):
        return KaldiFbankFeatures(frontend, normalize)
    if isinstance(frontend, DefaultFrontend):
        inner = frontend.frontend
        if frontend.stft is None or (inner is not None and (inner.use_wpe or inner.use_beamformer)):
            raise ValueError(
                "streaming: frontend: default with apply_stft: false, WPE or a beamformer is not supported; "
                "use plain single-channel STFT features"
            )
        return EspnetStftFeatures(frontend, normalize)
    name = "none (features as input)" if frontend is None else type(frontend).__name__
    raise ValueError(f"streaming: frontend {name} is not supported; use frontend: default or kaldi_fbank")
