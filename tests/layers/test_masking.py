"""Input checks, padding clean-up and the too-short error shared by every encoder (layers/masking.py), and the
utterance lookup behind that error (batch_context.py)."""

from types import SimpleNamespace

import pytest
import torch
from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError

from hybrid_encoders.batch_context import find_batch_context
from hybrid_encoders.layers.masking import (
    check_encoder_input,
    make_pad_mask,
    prepare_encoder_input,
    raise_too_short,
)


def _check(xs, ilens, param_dtype=torch.float32):
    check_encoder_input(xs, ilens, 4, "enc", param_dtype)


@pytest.mark.parametrize(
    "xs, ilens, match",
    [
        ([[0.0] * 4], torch.tensor([1]), "xs_pad must be a torch.Tensor"),
        (torch.zeros(2, 5, 4), [5, 3], "ilens must be a 1-D integer torch.Tensor of lengths, got list"),
        (torch.zeros(2, 5, 4), torch.tensor([True, True]), "ilens must be an integer tensor.*torch.bool"),
        (torch.zeros(2, 5, 4), torch.tensor([5.0, 2.5]), "ilens must be an integer tensor.*torch.float32"),
        (torch.zeros(2, 5, 4), torch.tensor([5.0, 3.0]), "ilens must be an integer tensor.*torch.float32"),
        (torch.zeros(2, 5, 4), torch.tensor([[5, 3]]), r"ilens must have shape \(2,\)"),
        (torch.zeros(0, 5, 4), torch.zeros(0, dtype=torch.long), "empty batch"),
        (torch.zeros(2, 5), torch.tensor([5, 3]), "xs_pad must be"),
        (torch.zeros(2, 5, 3), torch.tensor([5, 3]), "xs_pad has feature size 3.*input_size=4"),
        (torch.zeros(2, 5, 4, dtype=torch.long), torch.tensor([5, 3]), "xs_pad must be a floating-point tensor"),
        (torch.zeros(2, 5, 4), torch.tensor([6, 3]), r"ilens must lie in \[0, 5\]"),
        (torch.zeros(2, 5, 4), torch.tensor([5, -1]), r"ilens must lie in \[0, 5\]"),
        (torch.tensor([[[0.0, float("nan"), 0.0, 0.0]]]), torch.tensor([1]), "xs_pad contains NaN or Inf within the valid"),
    ],
)
def test_bad_input_is_named(xs, ilens, match):
    with pytest.raises(ValueError, match=f"^enc: {match}"):
        _check(xs, ilens)


def test_dtype_must_match_the_parameters_outside_autocast():
    xs, ilens = torch.zeros(2, 5, 4, dtype=torch.bfloat16), torch.tensor([5, 3])
    with pytest.raises(ValueError, match="xs_pad is torch.bfloat16 but the encoder's parameters are torch.float32"):
        _check(xs, ilens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _check(xs, ilens)  # autocast decides the compute dtype itself
    _check(xs, ilens, param_dtype=torch.bfloat16)
    check_encoder_input(xs, ilens, 4, "enc")  # no parameter dtype given: not checked


@pytest.mark.parametrize("garbage", [float("nan"), float("inf"), -float("inf"), 3e38])
def test_prepare_zeroes_exactly_the_padded_frames(garbage):
    xs = torch.randn(3, 6, 4)
    ilens = torch.tensor([6, 2, 0])
    dirty = xs.clone()
    dirty[make_pad_mask(ilens, 6)] = garbage
    before = dirty.clone()
    clean = prepare_encoder_input(dirty, ilens, 4, "enc", torch.float32)
    assert torch.equal(clean[0], xs[0]) and torch.equal(clean[1, :2], xs[1, :2])
    assert not clean[1, 2:].any() and not clean[2].any()
    torch.testing.assert_close(dirty, before, rtol=0, atol=0, equal_nan=True)  # the input itself is left as it was


def test_too_short_is_quiet_when_every_input_is_long_enough():
    raise_too_short("enc", torch.tensor([9, 12]), 9)
    raise_too_short("enc", torch.tensor([0, 3]), 0)


def test_too_short_outside_espnet_names_batch_items():
    with pytest.raises(TooShortUttError) as raised:
        raise_too_short("zipformer", torch.tensor([20, 5, 1]), 9)
    message = str(raised.value)
    assert message.startswith("zipformer: 2 of 3 inputs in this batch are shorter than the 9 frames")
    assert "batch item 1 (5 frames, ~0.05 s at a 10 ms frame shift), batch item 2 (1 frames" in message
    assert "asr.sh --min_wav_duration 0.11" in message
    assert (raised.value.actual_size, raised.value.limit) == (5, 9)


class _Model:
    """Stands in for ESPnetASRModel: its forward receives ``utt_id`` among ``kwargs`` and calls the encoder."""

    def __init__(self, frontend):
        self.frontend = frontend

    def forward(self, speech, speech_lengths, text=None, text_lengths=None, **kwargs):
        return self.encode(speech_lengths)

    def encode(self, speech_lengths):
        frames = torch.where(speech_lengths > 0, speech_lengths // 160 + 1, 1)  # ESPnet's STFT, center=True
        raise_too_short("zipformer", frames, 9)


def test_too_short_in_training_names_utterances_durations_and_empty_wavs():
    model = _Model(SimpleNamespace(fs=16000))
    speech_lengths = torch.tensor([16000, 800, 0])
    with pytest.raises(TooShortUttError) as raised:
        model.forward(None, speech_lengths, utt_id=["spk1-long", "spk1-short", "spk2-empty"])
    message = str(raised.value)
    assert "2 of 3 inputs" in message
    assert "'spk1-short' (6 frames, 0.050 s), 'spk2-empty' (empty: 0 samples)" in message
    assert "spk1-long" not in message


def test_espnet_default_frontend_sample_rate_and_unknown_rate():
    logmel = SimpleNamespace(mel_options={"sr": 8000})
    with pytest.raises(TooShortUttError, match=r"'b' \(6 frames, 0.100 s\)"):
        _Model(SimpleNamespace(logmel=logmel)).forward(None, torch.tensor([800, 9000]), utt_id=["b", "a"])
    with pytest.raises(TooShortUttError, match=r"'b' \(6 frames, ~0.06 s at a 10 ms frame shift\)"):
        _Model(None).forward(None, torch.tensor([800, 9000]), utt_id=["b", "a"])


def test_many_short_inputs_are_listed_up_to_ten():
    with pytest.raises(TooShortUttError, match=r"batch item 9 \(3 frames.*\) and 2 more\."):
        raise_too_short("enc", torch.full((12,), 3), 9)


def test_batch_context_needs_one_string_id_per_item():
    def model_forward(batch_size, **kwargs):
        return find_batch_context(batch_size)

    def trainer_loop(utt_id, batch_size):
        return model_forward(batch_size)  # the trainer's own ``utt_id`` local

    assert model_forward(2, utt_id=["a", "b"]).utt_ids == ["a", "b"]
    assert model_forward(2, utt_id=("a", "b")).speech_lengths is None
    assert model_forward(3, utt_id=["a", "b"]) is None  # e.g. a DataParallel replica, handed the whole list
    assert model_forward(2, utt_id=[1, 2]) is None
    assert trainer_loop(["x", "y"], 2).utt_ids == ["x", "y"]
    assert find_batch_context(1) is None
