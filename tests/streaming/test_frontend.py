"""Streaming features equal the model's front end (+ global MVN) on the whole utterance, for any piece sizes."""

import numpy as np
import pytest
import torch
from espnet2.asr.frontend.default import DefaultFrontend
from espnet2.layers.global_mvn import GlobalMVN
from espnet2.layers.utterance_mvn import UtteranceMVN

from hybrid_encoders.frontends.kaldi_fbank import KaldiFbankFrontend
from hybrid_encoders.streaming.frontend import EspnetStftFeatures, KaldiFbankFeatures, streaming_features

# Float32 rounding only: the same torch.stft / kaldi.fbank run on the same samples, but on batches of frames of
# another size, whose FFTs may round differently (measured <= 5e-7 on log-mel values of magnitude ~1-20).
ATOL = 1e-5


def _global_mvn(tmp_path, dim=80) -> GlobalMVN:
    rng = np.random.default_rng(1)
    count = 1000
    mean, std = rng.normal(size=dim), rng.uniform(0.5, 3.0, size=dim)
    stats = dict(count=count, sum=mean * count, sum_square=(std**2 + mean**2) * count)
    np.savez(tmp_path / "feats_stats.npz", **stats)
    return GlobalMVN(tmp_path / "feats_stats.npz")


def _pieces(num_samples: int, rng: np.random.Generator, low: int = 160, high: int = 16000):
    """Random piece sizes covering ``num_samples``: 10 ms to 1 s at 16 kHz, with some single samples mixed in."""
    sizes, total = [], 0
    while total < num_samples:
        size = 1 if rng.random() < 0.1 else int(rng.integers(low, high + 1))
        sizes.append(min(size, num_samples - total))
        total += sizes[-1]
    return sizes


def _stream(features, wave: torch.Tensor, sizes) -> torch.Tensor:
    out, position = [], 0
    for size in sizes:
        out.append(features.accept_waveform(wave[position : position + size], sample_rate=features.sample_rate))
        position += size
    out.append(features.finalize())
    return torch.cat(out)


def _full(frontend, normalize, wave: torch.Tensor) -> torch.Tensor:
    feats, lengths = frontend(wave.unsqueeze(0), torch.tensor([wave.numel()]))
    if normalize is not None:
        feats, lengths = normalize(feats, lengths)
    return feats[0, : int(lengths[0])]


FRONTENDS = {
    "default_mini_recipe": lambda: DefaultFrontend(n_fft=512, win_length=400, hop_length=160),
    "default_espnet_defaults": lambda: DefaultFrontend(),  # n_fft 512, hop 128, window = n_fft
    "default_no_center_odd_fft": lambda: DefaultFrontend(n_fft=301, win_length=240, hop_length=80, center=False),
    "default_normalized_hamming": lambda: DefaultFrontend(n_fft=256, hop_length=100, window="hamming", normalized=True),
    "kaldi_fbank": lambda: KaldiFbankFrontend(),
    "kaldi_fbank_snip_edges": lambda: KaldiFbankFrontend(snip_edges=True, n_mels=40),
    "kaldi_fbank_8k_long_window": lambda: KaldiFbankFrontend(fs=8000, frame_length=50.0, frame_shift=12.5),
}


@pytest.mark.parametrize("name", sorted(FRONTENDS))
@pytest.mark.parametrize("with_mvn", [False, True])
def test_streaming_equals_full_features_for_random_pieces(name, with_mvn, tmp_path):
    frontend = FRONTENDS[name]().eval()
    normalize = _global_mvn(tmp_path, frontend.output_size()) if with_mvn else None
    model = torch.nn.Module()
    model.frontend, model.normalize = frontend, normalize
    features = streaming_features(model)
    assert isinstance(features, KaldiFbankFeatures if "kaldi" in name else EspnetStftFeatures)
    rng = np.random.default_rng(len(name) + with_mvn)
    for num_samples in (16000 * 3 + 77, int(rng.integers(2000, 9000)), 1234):
        wave = torch.randn(num_samples, generator=torch.Generator().manual_seed(num_samples)) * 0.1
        expected = _full(frontend, normalize, wave)
        for _ in range(2):
            features.reset()
            got = _stream(features, wave, _pieces(num_samples, rng))
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", ["default_mini_recipe", "kaldi_fbank"])
def test_frames_come_out_as_soon_as_their_samples_arrived_and_memory_is_bounded(name):
    frontend = FRONTENDS[name]().eval()
    model = torch.nn.Module()
    model.frontend, model.normalize = frontend, None
    features = streaming_features(model)
    hop, window = 160, 512 if "default" in name else 400
    first_start = -256 if "default" in name else 80 - 200
    wave = torch.randn(16000 * 5) * 0.1
    emitted = 0
    for position in range(0, wave.numel(), 1600):  # 100 ms pieces
        emitted += features.accept_waveform(wave[position : position + 1600]).size(0)
        received = position + 1600
        # frame t is out exactly when its last sample arrived
        assert emitted == (received - window - first_start) // hop + 1
        assert features.buffer.numel() <= window + 1600
    tail = features.finalize().size(0)
    assert emitted + tail == _full(frontend, None, wave).size(0)
    assert tail <= -(-(window + first_start) // hop)  # only the frames that read past the end wait for finalize


def test_bad_input_is_rejected_with_clear_errors():
    model = torch.nn.Module()
    model.frontend, model.normalize = DefaultFrontend(n_fft=512, win_length=400, hop_length=160).eval(), None
    features = streaming_features(model)
    with pytest.raises(ValueError, match="8000 Hz, but the model's front end expects 16000 Hz"):
        features.accept_waveform(torch.zeros(800), sample_rate=8000)
    with pytest.raises(ValueError, match="1-D float waveform"):
        features.accept_waveform(torch.zeros(2, 800))
    with pytest.raises(ValueError, match="1-D float waveform"):
        features.accept_waveform(torch.zeros(800, dtype=torch.int16))
    features.accept_waveform(torch.zeros(100))
    with pytest.raises(ValueError, match="100 samples, fewer than the 257"):
        features.finalize()
    features.reset()
    features.accept_waveform(torch.randn(4000))
    features.finalize()
    with pytest.raises(ValueError, match="after finalize"):
        features.accept_waveform(torch.zeros(160))
    with pytest.raises(ValueError, match="finalize\\(\\) called twice"):
        features.finalize()

    model.normalize = UtteranceMVN()
    with pytest.raises(ValueError, match="UtteranceMVN needs the whole utterance"):
        streaming_features(model)
    model.normalize, model.frontend = None, None
    with pytest.raises(ValueError, match="frontend none"):
        streaming_features(model)
