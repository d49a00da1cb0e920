"""Bad input and configuration, the same for every encoder: padding never leaks whatever it holds, wrong argument
types and dtypes fail with a ValueError naming the argument, and every configuration key is type-checked."""

import random
import re
import typing

import pytest
import torch

from hybrid_encoders.encoders.config import constructor_types
from hybrid_encoders.encoders.hybridformer import HybridformerEncoder
from hybrid_encoders.encoders.squeezeformer import SqueezeformerEncoder
from hybrid_encoders.encoders.zipformer import DEFAULTS as ZIPFORMER_DEFAULTS
from hybrid_encoders.encoders.zipformer import ZipformerEncoder
from hybrid_encoders.layers.masking import make_pad_mask

from conftest import TINY_TOKENS, asr_train_arguments, tiny_training_config, write_random_corpus

ENCODERS = {"squeezeformer": SqueezeformerEncoder, "hybridformer": HybridformerEncoder, "zipformer": ZipformerEncoder}
TINY = {name: (cls, tiny_training_config(name)["encoder_conf"]) for name, cls in ENCODERS.items()}
NAMES = sorted(TINY)
KEYS = {"squeezeformer": SqueezeformerEncoder.DEFAULTS, "hybridformer": HybridformerEncoder.DEFAULTS,
        "zipformer": ZIPFORMER_DEFAULTS}


def _encoder(name, **overrides):
    cls, config = TINY[name]
    torch.manual_seed(0)
    return cls(80, **{**config, **overrides})


def _run(encoder, xs, ilens, seed=0):
    """One forward with every random generator seeded (dropout, Zipformer's skips and feature masks)."""
    torch.manual_seed(seed)
    random.seed(seed)
    return encoder(xs, ilens)


@pytest.mark.parametrize("garbage", [float("nan"), float("inf"), -1e30], ids=["nan", "inf", "huge"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", NAMES)
def test_padding_never_leaks(name, training, garbage):
    encoder = _encoder(name).train(training)
    ilens = torch.tensor([60, 41, 23])
    clean = torch.randn(3, 60, 80).masked_fill(make_pad_mask(ilens, 60).unsqueeze(-1), 0.0)
    dirty = clean.clone()
    dirty[1, 41:] = garbage
    dirty[2, 23:, ::3] = garbage
    expected, expected_lens, _ = _run(encoder, clean, ilens)
    out, olens, _ = _run(encoder, dirty, ilens)
    assert torch.equal(olens, expected_lens)
    assert torch.equal(out, expected)  # every frame: whatever the padding held, the encoder saw zeros
    if training:
        out.square().mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", NAMES)
def test_padding_beyond_the_fp16_range_never_leaks_under_autocast(name):
    encoder = _encoder(name).eval()
    ilens = torch.tensor([60, 35])
    xs = torch.randn(2, 60, 80)
    xs[1, 35:] = 1e5  # finite in float32, infinite once autocast casts it to float16
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        out, olens, _ = encoder(xs, ilens)
        alone, _, _ = encoder(xs[1:, :35], ilens[1:])
    assert torch.isfinite(out).all()
    if name != "zipformer":  # Zipformer, like icefall, depends on the amount of padding (not on its values)
        torch.testing.assert_close(out[1, : olens[1]], alone[0], rtol=0, atol=2e-3)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "ilens, match",
    [
        ([60, 40], "ilens must be a 1-D integer torch.Tensor of lengths, got list"),
        (torch.tensor([True, True]), "ilens must be an integer tensor .*torch.bool"),
        (torch.tensor([60.0, 40.5]), "ilens must be an integer tensor .*torch.float32"),
        (torch.tensor([60.0, 40.0]), "ilens must be an integer tensor .*torch.float32"),
    ],
    ids=["list", "bool", "fractional", "float"],
)
def test_ilens_must_be_an_integer_tensor(name, ilens, match):
    with pytest.raises(ValueError, match=f"^{name}: {match}"):
        _encoder(name).eval()(torch.randn(2, 60, 80), ilens)


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name):
    with pytest.raises(ValueError, match=rf"^{name}: empty batch \(xs_pad has shape \(0, 60, 80\)\)"):
        _encoder(name).eval()(torch.randn(0, 60, 80), torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize("name", NAMES)
def test_bf16_input_needs_a_bf16_model_or_autocast(name):
    encoder = _encoder(name).eval()
    xs, ilens = torch.randn(2, 60, 80).bfloat16(), torch.tensor([60, 40])
    with pytest.raises(ValueError, match=f"^{name}: xs_pad is torch.bfloat16 but the encoder's parameters are "
                                         "torch.float32.*torch.autocast"):
        encoder(xs, ilens)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(encoder(xs, ilens)[0]).all()
    with torch.no_grad():
        assert torch.isfinite(encoder.to(torch.bfloat16)(xs, ilens)[0]).all()


KERNEL_TYPE = {"squeezeformer": "an int", "hybridformer": "an int", "zipformer": "an int or a list of ints"}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("value", [3.0, "15", True, [7.0]], ids=["float", "str", "bool", "float-list"])
def test_cnn_module_kernel_of_the_wrong_type(name, value):
    expected = f"{name}: cnn_module_kernel must be {KERNEL_TYPE[name]}, got {value!r} ({type(value).__name__})"
    with pytest.raises(ValueError, match="^" + re.escape(expected)):
        _encoder(name, cnn_module_kernel=value)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("value", [80.0, "80", True], ids=["float", "str", "bool"])
def test_input_size_must_be_an_int(name, value):
    cls, config = TINY[name]
    with pytest.raises(ValueError, match=rf"^{name}: input_size must be an int, got {value!r}"):
        cls(value, **config)


@pytest.mark.parametrize("name", NAMES)
def test_input_size_must_be_positive(name):
    cls, config = TINY[name]
    with pytest.raises(ValueError, match=rf"^{name}: input_size must be > 0, got 0"):
        cls(0, **config)


@pytest.mark.parametrize("name", NAMES)
def test_every_configuration_key_is_type_checked(name):
    cls, config = TINY[name]
    annotations = constructor_types(cls)
    assert set(KEYS[name]) | {"preset"} <= set(annotations), "a configuration key without a constructor annotation"
    for key in ["preset", *KEYS[name]]:
        with pytest.raises(ValueError, match=rf"^{name}: {key} must be .*, got {{'a': 1}} \(dict\)"):
            cls(80, **{**config, key: {"a": 1}})


@pytest.mark.parametrize("name", NAMES)
def test_numbers_from_yaml_are_accepted_as_floats(name):
    cls, config = TINY[name]
    float_keys = [key for key, annotation in constructor_types(cls).items()
                  if annotation is float or typing.get_args(annotation) == (float, type(None))]
    assert float_keys
    # YAML writes 0 and 10000 as ints; a float-typed key takes them
    overrides = {key: 1 if "dropout" not in key else 0 for key in float_keys}
    _encoder(name, **overrides)


@pytest.mark.slow
def test_espnet_training_names_the_too_short_utterances(tmp_path):
    """ESPnet's own trainer on a corpus with an empty wav and a 44 ms one: the error names both utterances."""
    import subprocess
    import sys

    import numpy as np
    import soundfile
    import yaml

    train = write_random_corpus(tmp_path / "train", 2, seed=0)
    valid = write_random_corpus(tmp_path / "valid", 2, seed=1)
    short = {"train_empty": 0, "train_short": 700}  # first in the files: the first batch (unsorted, 2 per batch)
    for key, samples in short.items():
        soundfile.write(str(train / f"{key}.wav"), np.full(samples, 0.01, dtype=np.float32), 16000)
    prepended = {"wav.scp": [f"{key} {train / key}.wav" for key in short], "text": [f"{key} a" for key in short]}
    for name, lines in prepended.items():
        (train / name).write_text("\n".join(lines) + "\n" + (train / name).read_text())
    (tmp_path / "tokens.txt").write_text("\n".join(TINY_TOKENS) + "\n")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(tiny_training_config("zipformer")))
    arguments = asr_train_arguments(train, valid) + [
        "--train_shape_file", f"{train}/wav.scp", "--valid_shape_file", f"{valid}/wav.scp",
        "--output_dir", "exp", "--max_epoch", "1",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "espnet2.bin.asr_train", *arguments], cwd=tmp_path, capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode != 0
    assert "TooShortUttError: zipformer: 2 of 2 inputs in this batch are shorter than the 9 frames" in result.stderr
    # ESPnet's STFT gives an empty wav one frame: it is reported as empty, not as "1 frames"
    assert "'train_empty' (empty: 0 samples), 'train_short' (5 frames, 0.044 s)" in result.stderr
    assert "asr.sh --min_wav_duration 0.11" in result.stderr
