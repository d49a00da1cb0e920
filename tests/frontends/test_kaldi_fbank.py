import math

import numpy as np
import pytest
import torch

from hybrid_encoders.frontends.kaldi_fbank import KaldiFbankFrontend


def _slow_kaldi_frame(wave: np.ndarray, frame: int, fs=16000, n_mels=80, low=20.0, high=-400.0) -> np.ndarray:
    """Kaldi fbank of one interior frame (snip_edges=False), written from Kaldi's documented steps."""
    hop, length, fft = 160, 400, 512
    start = frame * hop + hop // 2 - length // 2
    x = wave[start : start + length].astype(np.float64)
    x = x - x.mean()  # remove DC offset
    x = np.concatenate([[x[0] - 0.97 * x[0]], x[1:] - 0.97 * x[:-1]])  # pre-emphasis
    n = np.arange(length)
    x = x * (0.5 - 0.5 * np.cos(2 * np.pi * n / (length - 1))) ** 0.85  # povey window
    power = np.abs(np.fft.rfft(x, fft)) ** 2
    mel = lambda f: 1127.0 * np.log(1 + f / 700.0)  # noqa: E731
    high = fs / 2 + high if high <= 0 else high
    edges = np.linspace(mel(low), mel(high), n_mels + 2)
    bins = mel(np.arange(fft // 2) * fs / fft)
    energies = []
    for m in range(n_mels):
        left, centre, right = edges[m : m + 3]
        up = (bins - left) / (centre - left)
        down = (right - bins) / (right - centre)
        weights = np.where((bins > left) & (bins < right), np.minimum(up, down), 0.0)
        energies.append(math.log(max(float(weights @ power[: fft // 2]), np.finfo(np.float32).eps)))
    return np.array(energies)


def test_matches_slow_kaldi_reference_and_frame_counts():
    torch.manual_seed(0)
    wave = (torch.randn(1, 8000) * 0.1).float()
    frontend = KaldiFbankFrontend().eval()
    feats, lengths = frontend(wave, torch.tensor([8000]))
    assert lengths.tolist() == [50] and feats.shape == (1, 50, 80) and frontend.output_size() == 80
    for frame in (3, 20, 47):
        expected = _slow_kaldi_frame(wave[0].numpy(), frame)
        np.testing.assert_allclose(feats[0, frame].numpy(), expected, rtol=0, atol=2e-3)


def test_padded_batch_equals_single_utterances_and_lengths_round():
    torch.manual_seed(0)
    frontend = KaldiFbankFrontend().eval()
    lengths = [16000, 12345, 400]
    batch = torch.zeros(3, 16000)
    waves = [torch.randn(n) * 0.05 for n in lengths]
    for b, wave in enumerate(waves):
        batch[b, : len(wave)] = wave
    feats, feat_lengths = frontend(batch, torch.tensor(lengths))
    assert feat_lengths.tolist() == [(n + 80) // 160 for n in lengths] == [100, 77, 3]
    for b, wave in enumerate(waves):
        alone, _ = frontend(wave.unsqueeze(0), torch.tensor([len(wave)]))
        torch.testing.assert_close(feats[b, : feat_lengths[b]], alone[0])
        assert bool((feats[b, feat_lengths[b] :] == 0).all())


def test_dither_only_in_training():
    frontend = KaldiFbankFrontend(dither=1.0)
    wave, length = torch.zeros(1, 1600), torch.tensor([1600])
    assert torch.equal(frontend.eval()(wave, length)[0], frontend.eval()(wave, length)[0])
    assert not torch.equal(frontend.train()(wave, length)[0], frontend.eval()(wave, length)[0])


def test_bad_audio_and_options_are_rejected():
    frontend = KaldiFbankFrontend(fs="16k")
    assert frontend.fs == 16000
    corrupt = torch.zeros(1, 1600)
    corrupt[0, 10] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        frontend(corrupt, torch.tensor([1600]))
    with pytest.raises(ValueError, match="samples"):
        frontend(torch.zeros(1, 1600), torch.tensor([50]))
    with pytest.raises(ValueError, match="batch, samples"):
        frontend(torch.zeros(1, 2, 1600), torch.tensor([1600]))
    with pytest.raises(ValueError, match="float"):
        frontend(torch.zeros(1, 1600, dtype=torch.int16), torch.tensor([1600]))
    with pytest.raises(ValueError, match="high_freq"):
        KaldiFbankFrontend(fs=8000, high_freq=5000)
    with pytest.raises(ValueError, match="n_mels"):
        KaldiFbankFrontend(n_mels=0)
