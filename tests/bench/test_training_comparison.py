"""Training-mode benchmark: encoder_conf overrides, schedule position, seeded steps, reference implementations built
from a user's checkout, and the comparison table."""

import argparse
import json
import random
import textwrap

import pytest
import torch

from hybrid_encoders.bench import reference
from hybrid_encoders.bench.harness import TRAINING, Settings, _Step, set_batch_count
from hybrid_encoders.bench.models import PLUGIN, EncoderSpec, build_encoder, parse_encoder
from hybrid_encoders.bench.report import training_comparison
from hybrid_encoders.commands import bench as bench_command
from hybrid_encoders.encoders.zipformer import ZipformerEncoder
from hybrid_encoders.layers.swoosh import swoosh_l, swoosh_r


def test_encoder_overrides_are_parsed_as_yaml_and_reach_the_encoder():
    spec = parse_encoder("zipformer:s+activation_checkpointing=[true, false, true, false, true, false]")
    assert spec == EncoderSpec("zipformer", "s", PLUGIN, (("activation_checkpointing", [True, False] * 3),))
    assert spec.label == "zipformer:s+activation_checkpointing=[true,false,true,false,true,false]"
    assert spec.config() == {"preset": "s", "activation_checkpointing": [True, False] * 3}
    encoder = build_encoder(parse_encoder("squeezeformer:xs+activation_checkpointing=true"), 80)
    assert encoder.activation_checkpointing is True
    with pytest.raises(ValueError, match="'activation_checkpointing' in .* is not key=value"):
        parse_encoder("zipformer:m+activation_checkpointing")


def test_batch_count_reaches_our_schedules_and_training_steps_are_seeded():
    tiny = {"num_encoder_layers": 1, "encoder_dim": 32, "encoder_unmasked_dim": 16, "feedforward_dim": 48}
    tiny.update(num_heads=2, query_head_dim=8, value_head_dim=4, pos_dim=8, cnn_module_kernel=5)
    encoder = ZipformerEncoder(80, **tiny)
    set_batch_count(encoder, 5000)
    xs, ilens = torch.randn(2, 60, 80), torch.tensor([60, 60])
    step = _Step(encoder, TRAINING, xs, ilens, seed=3)
    outputs = []
    for _ in range(2):
        step.prepare()
        outputs.append(step().detach())
        random.random(), torch.rand(())  # whatever runs between steps does not change the next step
    assert int(encoder.batch_count) == 5000
    assert encoder._schedules[0].batch_count == 5000
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="batch_count"):
        Settings(batch_count=-1)


@pytest.mark.parametrize("kind, plain", [("l", swoosh_l), ("r", swoosh_r)])
def test_k2_stand_in_matches_swoosh_and_keeps_an_8_bit_derivative(kind, plain):
    k2 = reference.k2_swoosh_stand_in()
    x = torch.linspace(-10, 10, 4001, requires_grad=True)
    torch.testing.assert_close(getattr(k2, f"swoosh_{kind}_forward")(x), plain(x.detach()), rtol=1e-6, atol=1e-6)
    value, derivative = getattr(k2, f"swoosh_{kind}_forward_and_deriv")(x.detach())
    expected = torch.autograd.grad(plain(x).sum(), x)[0]
    torch.testing.assert_close(derivative, expected, rtol=1e-6, atol=1e-6)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.dtype) or t, lambda t: t):
        y = getattr(k2, f"swoosh_{kind}")(x)
    assert kept == [torch.uint8]
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert (grad - expected).abs().max() <= 1.005 / 255 + 1e-6  # one quantisation step
    assert abs(float((grad - expected).mean())) < 1e-3  # dithering: unbiased


FAKE_ZIPFORMER = '''
import torch
from scaling import ScheduledFloat
from icefall.utils import torch_autocast
import k2

class Zipformer2(torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs
        self.proj = torch.nn.Linear(kwargs["encoder_dim"][0], max(kwargs["encoder_dim"]))
        self.schedule = kwargs["dropout"]

    def forward(self, x, x_lens, src_key_padding_mask=None):
        assert x.dim() == 3 and src_key_padding_mask.shape == (x.size(1), x.size(0))  # (T, N, C), (N, T)
        with torch_autocast(enabled=False):
            return k2.swoosh_l(self.proj(x[::2])), (x_lens + 1) // 2
'''
FAKE_SUBSAMPLING = '''
import torch

class Conv2dSubsampling(torch.nn.Module):
    def __init__(self, in_channels, out_channels, dropout):
        super().__init__()
        self.linear = torch.nn.Linear(in_channels, out_channels)
        self.dropout = dropout

    def forward(self, x, x_lens):
        return self.linear(x[:, 7::2]), (x_lens - 7) // 2
'''
FAKE_SCALING = '''
import torch

class ScheduledFloat(torch.nn.Module):
    def __init__(self, *points, default=0.0):
        super().__init__()
        self.points, self.batch_count = points, None
'''


def _fake_icefall(root):
    recipe = root / "egs/librispeech/ASR/zipformer"
    recipe.mkdir(parents=True)
    for name, text in (("zipformer", FAKE_ZIPFORMER), ("subsampling", FAKE_SUBSAMPLING), ("scaling", FAKE_SCALING)):
        (recipe / f"{name}.py").write_text(textwrap.dedent(text))
    return root


def test_icefall_reference_is_built_from_the_checkout_with_our_preset(tmp_path, monkeypatch):
    for name in ("zipformer", "subsampling", "scaling", "k2", "icefall", "icefall.utils"):
        monkeypatch.delitem(__import__("sys").modules, name, raising=False)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    notes = []
    model = reference.build_icefall_zipformer(str(_fake_icefall(tmp_path)), "m", notes)
    kwargs = model.encoder.kwargs
    config = ZipformerEncoder.build_config("m")
    assert kwargs["encoder_dim"] == tuple(config["encoder_dim"]) == (192, 256, 384, 512, 384, 256)
    assert kwargs["num_encoder_layers"] == (2, 2, 3, 4, 3, 2) and kwargs["output_downsampling_factor"] == 2
    assert any(note.startswith("k2 not importable") for note in notes)  # the stand-in was installed and reported
    model.set_batch_count(1234)
    assert model.encoder.schedule.batch_count == model.encoder_embed.dropout.batch_count == 1234
    xs = torch.randn(2, 107, 80, requires_grad=True)
    ys, olens, _ = model(xs, torch.tensor([107, 91]))
    assert ys.shape == (2, 25, 512) and olens.tolist() == [25, 21]  # back to batch-first
    ys.sum().backward()
    assert xs.grad is not None


def test_reference_options_name_a_bad_checkout_and_exit_2(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench_command.add_arguments(parser)
    argv = ["--encoders", "zipformer:m", "--mode", "training", "--lengths", "1", "--no-plots", "--out", str(tmp_path)]
    assert bench_command.run(parser.parse_args(argv + ["--reference-icefall", str(tmp_path / "nowhere")])) == 2
    error = capsys.readouterr().err
    assert "--reference-icefall" in error and "egs/librispeech/ASR/zipformer" in error
    assert bench_command.run(parser.parse_args(argv + ["--reference-nemo", str(tmp_path)])) == 2
    assert "--reference-nemo" in capsys.readouterr().err


def test_nemo_reference_without_nemo_names_what_is_missing(tmp_path):
    modules = tmp_path / "nemo/collections/asr/modules"
    modules.mkdir(parents=True)
    (modules / "squeezeformer_encoder.py").write_text("import nemo_only_dependency\n")
    with pytest.raises(ValueError, match="cannot import NeMo's .* nemo_toolkit\\[asr\\]"):
        reference.build_nemo_squeezeformer(str(tmp_path), "sm")
    config = reference.nemo_squeezeformer_config("sm")
    sizes = (config["n_layers"], config["d_model"], config["time_reduce_idx"], config["time_recovery_idx"])
    assert sizes == (16, 256, 7, 15)


def test_training_comparison_pairs_each_encoder_with_its_reference():
    def cell(label, seconds, megabytes):
        return {"encoder": label, "length_s": 30.0, "mode": TRAINING, "status": "ok", "median_s": seconds,
                "min_s": seconds, "max_s": seconds, "peak_bytes": megabytes * 1024**2}  # fmt: skip

    result = {
        "settings": {"lengths_s": [30.0]},
        "encoders": [
            {"label": "conformer:ls100"},
            {"label": "zipformer:m", "compare_with": "icefall:zipformer-m"},
            {"label": "icefall:zipformer-m", "reference_for": "zipformer"},
        ],
        "cells": [
            cell("conformer:ls100", 4.0, 2271), cell("zipformer:m", 3.5, 1800), cell("icefall:zipformer-m", 7.0, 2300)
        ],
    }
    rows = [line for line in training_comparison(result) if line.startswith(("| zipformer", "| icefall"))]
    assert len(rows) == 1  # the reference itself is not a row
    fields = [field.strip() for field in rows[0].strip("|").split("|")]
    assert fields[1] == "icefall:zipformer-m" and fields[5] == "0.50" and fields[8] == "0.78"
    assert json.dumps(result)  # JSON-ready


def test_live_memory_fixes_the_mmap_threshold_once_and_says_so(monkeypatch):
    from hybrid_encoders.bench import harness

    calls = []
    monkeypatch.setattr(harness, "fix_mmap_threshold", lambda threshold: calls.append(threshold) or True)
    settings = Settings(lengths_s=(0.3,), runs=1, warmup=0, matmul_size=0, modes=(TRAINING,), live_memory=True)

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(80, 4)

        def forward(self, xs, ilens, prev_states=None):
            return self.linear(xs), ilens, None

    candidate = harness.Candidate("linear", lambda input_size: Linear())
    result = harness.Benchmark([candidate], settings, log=lambda line: None).run()
    assert calls == [harness.LIVE_MEMORY_MMAP_THRESHOLD] and "live memory" in result["memory_note"]
    (cell,) = result["cells"]
    assert cell["peak_bytes"] is not None  # still measured
