"""Tests of the benchmark harness itself (tiny models, short inputs, a scripted clock; no speed is asserted)."""

import argparse
import json
import statistics

import pytest
import torch
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder

from hybrid_encoders.bench.harness import Benchmark, Candidate, MemoryProbe, Settings, _Step, count_flops
from hybrid_encoders.bench.models import ESPNET, EncoderSpec, parse_encoder, parse_encoders
from hybrid_encoders.bench.report import markdown_table, write_report
from hybrid_encoders.commands import bench as bench_command


class LinearStack(torch.nn.Module):
    """ESPnet encoder interface around ``Linear`` layers of the given sizes, ``(B, T, sizes[0]) -> (B, T, sizes[-1])``."""

    def __init__(self, sizes, fail_above_frames=None):
        super().__init__()
        self.layers = torch.nn.Sequential(*(torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])))
        self.fail_above_frames = fail_above_frames

    def forward(self, xs_pad, ilens, prev_states=None):
        if self.fail_above_frames is not None and xs_pad.size(1) > self.fail_above_frames:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.layers(xs_pad), ilens, None


class LinearThenDepthwiseConv(torch.nn.Module):
    """``Linear(input_size, channels)`` then a depthwise ``Conv1d`` over time (same length), ESPnet interface."""

    def __init__(self, input_size, channels, kernel):
        super().__init__()
        self.linear = torch.nn.Linear(input_size, channels)
        self.conv = torch.nn.Conv1d(channels, channels, kernel, padding=kernel // 2, groups=channels)

    def forward(self, xs_pad, ilens, prev_states=None):
        return self.conv(self.linear(xs_pad).transpose(1, 2)).transpose(1, 2), ilens, None


class SelfAttentionOnly(torch.nn.Module):
    """``scaled_dot_product_attention`` of the features with themselves, split into ``heads`` heads."""

    def __init__(self, heads):
        super().__init__()
        self.heads = heads
        self.scale = torch.nn.Parameter(torch.ones(1))  # something to train

    def forward(self, xs_pad, ilens, prev_states=None):
        batch, frames, features = xs_pad.shape
        heads = (self.scale * xs_pad).view(batch, frames, self.heads, features // self.heads).transpose(1, 2)
        out = torch.nn.functional.scaled_dot_product_attention(heads, heads, heads)
        return out.transpose(1, 2).reshape(batch, frames, features), ilens, None


class ScriptedClock:
    """Each timed attempt consumes one ``(wall_s, cpu/wall ratio)`` pair: the first ``read`` of an attempt returns
    the current time, the second advances it by the scripted amounts."""

    def __init__(self, attempts):
        self.attempts = list(attempts)
        self.pending = None
        self.wall = self.cpu = 0.0

    def read(self):
        if self.pending is None:
            self.pending = self.attempts.pop(0)
        else:
            wall, ratio = self.pending
            self.pending = None
            self.wall += wall
            self.cpu += wall * ratio
        return self.wall, self.cpu


def tiny_conformer(input_size):
    return ConformerEncoder(input_size, output_size=16, attention_heads=2, linear_units=32, num_blocks=1)


def quiet_settings(**changes):
    base = dict(lengths_s=(0.3,), runs=2, warmup=1, matmul_size=32, feature_dim=80, min_cpu_ratio=1.5)
    base.update(changes)
    return Settings(**base)


def run_quietly(candidates, settings, clock):
    return Benchmark(candidates, settings, clock=clock, log=lambda line: None).run()


def test_json_schema_of_a_run_on_a_tiny_model(tmp_path):
    torch.manual_seed(0)
    model = tiny_conformer(80)
    candidates = [
        Candidate("tiny", lambda input_size: model, {"name": "conformer", "preset": "tiny"}),
        Candidate("stack", lambda input_size: LinearStack([input_size, 8])),
    ]
    # inference: 1 warm-up + 2 runs per encoder, then training: the same; all quiet (ratio 2), stack twice as slow.
    walls = {"tiny": 0.1, "stack": 0.2}
    script = [(walls[label], 2.0) for _mode in range(2) for _round in range(3) for label in ("tiny", "stack")]
    clock = ScriptedClock(script)
    result = run_quietly(candidates, quiet_settings(), clock)
    assert clock.attempts == [] and clock.pending is None

    assert result["schema"] == "hybrid-encoders-bench/1" and result["complete"] is True
    for key in ("torch", "threads", "cpu_model", "device", "device_name", "python", "load_average_start", "load_average_end"):
        assert key in result["environment"]
    assert result["environment"]["torch"] == torch.__version__
    assert result["environment"]["threads"] == 2 and result["environment"]["device"] == "cpu"
    assert result["settings"]["lengths_s"] == [0.3] and result["settings"]["batch"] == 2
    assert len(result["machine"]["matmul_gflops"]) == 2 and result["machine"]["matmul_gflops_best"] > 0
    assert result["encoders"][0] == {
        "label": "tiny",
        "name": "conformer",
        "preset": "tiny",
        "params": sum(p.numel() for p in model.parameters()),
    }
    assert [(c["encoder"], c["mode"]) for c in result["cells"]] == [
        ("tiny", "inference"),
        ("tiny", "training"),
        ("stack", "inference"),
        ("stack", "training"),
    ]
    with torch.no_grad():
        expected_shape = list(model.eval()(torch.zeros(2, 30, 80), torch.full((2,), 30))[0].shape)
    for cell in result["cells"]:
        assert cell["status"] == "ok" and cell["note"] == "" and cell["frames"] == 30 and cell["batch"] == 2
        assert [run["wall_s"] for run in cell["runs"]] == pytest.approx([walls[cell["encoder"]]] * 2)
        assert cell["median_s"] == pytest.approx(statistics.median(run["wall_s"] for run in cell["runs"]))
        assert cell["median_cpu_s"] == pytest.approx(2.0 * cell["median_s"])
        assert cell["flagged_runs"] == 0 and cell["min_cpu_ratio"] == pytest.approx(2.0)
        assert isinstance(cell["peak_bytes"], int) and cell["peak_bytes"] >= 0
        assert cell["process_peak_bytes"] >= cell["memory_before_bytes"] > 0
        assert cell["flops"] > 0
        assert cell["gflops_per_s"] == pytest.approx(cell["flops"] / cell["median_s"] / 1e9)
        assert cell["efficiency"] == pytest.approx(cell["gflops_per_s"] / result["machine"]["matmul_gflops_best"])
    assert result["cells"][0]["output_shape"] == expected_shape
    assert result["cells"][2]["output_shape"] == [2, 30, 8]

    written = write_report(result, tmp_path)
    assert sorted(path.name for path in written) == [
        "flops_vs_length.png",
        "memory_vs_length.png",
        "results.json",
        "results.md",
        "time_vs_length.png",
    ]
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(result))
    for path in written:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "results.md").read_text()
    stack_row = next(line for line in table.splitlines() if line.startswith("| stack |"))
    # inference and training of the stack take 2x the baseline's (first encoder's) time
    assert stack_row.split(" | ")[5] == "2.00" and stack_row.split(" | ")[9] == "2.00"


def test_flops_of_a_linear_stack_are_two_batch_time_in_out():
    sizes, batch, frames = [80, 48, 24, 10], 2, 50
    candidates = [Candidate("stack", lambda input_size: LinearStack(sizes))]
    settings = quiet_settings(lengths_s=(0.5,), flops_only=True, matmul_size=0)
    result = run_quietly(candidates, settings, ScriptedClock([]))
    inference, training = result["cells"]
    pairs = list(zip(sizes[:-1], sizes[1:]))
    forward = sum(2 * batch * frames * a * b for a, b in pairs)
    assert inference["flops"] == forward
    # backward: every layer's weight gradient, and input gradients for all layers but the first (the features do
    # not require grad); each is one more matmul of the same size.
    assert training["flops"] == forward + forward + sum(2 * batch * frames * a * b for a, b in pairs[1:])
    assert "runs" in inference and inference["runs"] == [] and "median_s" not in inference
    assert count_flops(lambda: torch.nn.Linear(7, 3)(torch.ones(4, 7)))[0] == 2 * 4 * 7 * 3


def test_training_flops_of_a_depthwise_convolution_count_each_gradient_once():
    # torch's own formula counts a grouped convolution's weight gradient `groups` times too high
    batch, frames, features, channels, kernel = 2, 40, 80, 16, 5
    candidates = [Candidate("conv", lambda input_size: LinearThenDepthwiseConv(input_size, channels, kernel))]
    settings = quiet_settings(lengths_s=(0.4,), flops_only=True, matmul_size=0)
    inference, training = run_quietly(candidates, settings, ScriptedClock([]))["cells"]
    linear = 2 * batch * frames * features * channels
    conv = 2 * batch * frames * channels * kernel  # one multiply-accumulate per channel, tap and output frame
    assert inference["flops"] == linear + conv
    # linear: forward + weight gradient (the features need no gradient); conv: forward + input and weight gradients
    assert training["flops"] == 2 * linear + 3 * conv


def test_attention_through_the_cpu_sdpa_kernel_is_counted():
    # torch's FlopCounterMode has no formula for the CPU kernel and would count 0
    batch, frames, features, heads = 2, 30, 80, 4
    candidates = [Candidate("sdpa", lambda input_size: SelfAttentionOnly(heads))]
    settings = quiet_settings(lengths_s=(0.3,), flops_only=True, matmul_size=0)
    inference, training = run_quietly(candidates, settings, ScriptedClock([]))["cells"]
    one_product = 2 * batch * heads * frames * frames * (features // heads)  # q k^T, and the same again for p v
    assert inference["flops"] == 2 * one_product
    # backward as torch counts its fused attention kernels: the scores recomputed, then grads of q, k, v and p
    assert training["flops"] == 2 * one_product + 5 * one_product


def test_disturbed_run_is_flagged_and_repeated():
    candidates = [Candidate(label, lambda input_size: LinearStack([input_size, 4])) for label in ("a", "b")]
    settings = quiet_settings(modes=("inference",), matmul_size=0, max_retries=2)
    clock = ScriptedClock(
        [
            (1.0, 2.0),  # warm-up a
            (1.0, 2.0),  # warm-up b
            (1.0, 2.0),  # run 1 a
            (3.0, 0.9),  # run 1 b: another process took a core
            (1.1, 2.0),  # run 2 a
            (5.0, 0.5),  # run 2 b: disturbed too
            (1.3, 1.9),  # repeat round 1: run 1 b is quiet now
            (4.0, 0.7),  # repeat round 1: run 2 b still disturbed
            (4.5, 0.6),  # repeat round 2: run 2 b, last allowed attempt, still disturbed
        ]
    )
    result = run_quietly(candidates, settings, clock)
    assert clock.attempts == [] and clock.pending is None
    a, b = result["cells"]
    assert [len(run["attempts"]) for run in a["runs"]] == [1, 1] and a["flagged_runs"] == 0
    assert [len(run["attempts"]) for run in b["runs"]] == [2, 3]
    assert [run["wall_s"] for run in b["runs"]] == pytest.approx([1.3, 4.0])  # the best-ratio attempt is kept
    assert [run["flagged"] for run in b["runs"]] == [False, True]
    assert b["flagged_runs"] == 1 and b["min_cpu_ratio"] == pytest.approx(0.7)
    assert [attempt["cpu_ratio"] for attempt in b["runs"][1]["attempts"]] == pytest.approx([0.5, 0.7, 0.6])


def test_single_threaded_cell_is_judged_against_its_own_best_ratio():
    candidates = [Candidate("small", lambda input_size: LinearStack([input_size, 4]))]
    settings = quiet_settings(modes=("inference",), matmul_size=0, runs=3)
    # a model too small to use 2 threads reaches ratio 1.0 when quiet: not disturbed; 0.5 is.
    clock = ScriptedClock([(1.0, 1.0), (1.0, 1.0), (2.0, 0.5), (1.0, 0.95), (1.0, 1.0)])
    result = run_quietly(candidates, settings, clock)
    assert clock.attempts == []
    cell = result["cells"][0]
    assert [len(run["attempts"]) for run in cell["runs"]] == [1, 2, 1]
    assert cell["flagged_runs"] == 0 and [run["wall_s"] for run in cell["runs"]] == pytest.approx([1.0, 1.0, 1.0])


def test_a_cell_disturbed_in_every_run_is_still_flagged():
    # the bar follows the cell's best ratio down, but not below 0.8: less than one busy core means disturbed
    candidates = [Candidate("busy", lambda input_size: LinearStack([input_size, 4]))]
    settings = quiet_settings(modes=("inference",), matmul_size=0, max_retries=1)
    clock = ScriptedClock([(5.0, 0.45), (5.0, 0.4), (6.0, 0.35), (4.0, 0.5), (5.5, 0.42)])
    result = run_quietly(candidates, settings, clock)
    assert clock.attempts == []
    cell = result["cells"][0]
    assert [len(run["attempts"]) for run in cell["runs"]] == [2, 2] and cell["flagged_runs"] == 2
    assert [run["wall_s"] for run in cell["runs"]] == pytest.approx([4.0, 5.5])


def test_too_short_length_is_skipped_with_a_note():
    candidates = [Candidate("tiny", tiny_conformer)]
    settings = quiet_settings(lengths_s=(0.05, 0.3), modes=("inference",), matmul_size=0)
    result = run_quietly(candidates, settings, ScriptedClock([(0.1, 2.0)] * 3))
    short, fine = result["cells"]
    assert (short["length_s"], short["status"], short["runs"]) == (0.05, "skipped", [])
    assert short["note"].startswith("too short:") and "(5 < 7)" in short["note"]
    assert "flops" not in short and "median_s" not in short
    assert fine["status"] == "ok" and len(fine["runs"]) == 2
    row = next(line for line in markdown_table(result).splitlines() if line.startswith("| tiny | 0.01 | 0.05 |"))
    assert "skipped" in row and "too short:" in row


def test_out_of_memory_cell_is_recorded_and_the_rest_continues():
    candidates = [
        Candidate("big", lambda input_size: LinearStack([input_size, 4], fail_above_frames=40)),
        Candidate("small", lambda input_size: LinearStack([input_size, 4])),
    ]
    settings = quiet_settings(lengths_s=(0.3, 0.5), modes=("inference",), matmul_size=0)
    partials = []
    benchmark = Benchmark(candidates, settings, clock=ScriptedClock([(0.1, 2.0)] * 9), log=lambda line: None)
    result = benchmark.run(on_length=partials.append)
    assert [(p["complete"], [c["length_s"] for c in p["cells"]]) for p in partials] == [(False, [0.3, 0.3])]
    assert result["complete"] is True
    status = {(c["encoder"], c["length_s"]): (c["status"], len(c["runs"])) for c in result["cells"]}
    assert status == {("big", 0.3): ("ok", 2), ("small", 0.3): ("ok", 2), ("big", 0.5): ("oom", 0), ("small", 0.5): ("ok", 2)}
    oom = next(c for c in result["cells"] if c["status"] == "oom")
    assert oom["note"] == "out of memory: CUDA out of memory. Tried to allocate 20.00 GiB"


def test_memory_probe_sees_an_allocation_even_when_the_allocator_could_reuse_it():
    probe = MemoryProbe("cpu")
    assert probe.note == ""
    # 16 MB: below glibc's largest mmap threshold, so after the first call the block comes from the heap and, once
    # freed, would stay resident and hide every later allocation from the RSS, were it not handed back first.
    size = 16 * 1024 * 1024

    def allocate():
        torch.ones(size // 4).sum()

    for _ in range(3):
        growth, before, peak = probe.measure(allocate)
        # the RSS also moves by what else the process maps or releases meanwhile (a few hundred kB here)
        assert growth > 0.95 * size and peak == before + growth


def test_settings_reject_bad_values_naming_the_key():
    with pytest.raises(ValueError, match="modes"):
        Settings(modes=("inference", "decoding"))
    with pytest.raises(ValueError, match="lengths_s"):
        Settings(lengths_s=(0.0,))
    with pytest.raises(ValueError, match="runs"):
        Settings(runs=0)
    assert Settings(threads=4).min_cpu_ratio == 3.0
    with pytest.raises(ValueError, match="amp must be None or one of \\['bf16', 'fp16'\\], got 'int8'"):
        Settings(amp="int8")


@pytest.mark.parametrize("amp, dtype, rtol", [(None, torch.float32, 1e-5), ("bf16", torch.bfloat16, 1e-2)])
def test_training_step_runs_the_forward_under_the_requested_autocast(amp, dtype, rtol):
    torch.manual_seed(0)
    model = LinearStack([8, 6, 4])
    xs, ilens = torch.randn(2, 5, 8), torch.full((2,), 5)
    step = _Step(model, "training", xs, ilens, amp=amp)
    step.prepare()
    out = step()
    assert out.dtype == dtype and out.shape == (2, 5, 4)
    # the gradient of mean(out^2) over the last layer's bias, computed from the step's own output (in bf16 the
    # output's gradient is itself rounded to bf16: 8 bits of mantissa)
    expected = 2 * out.float().sum(dim=(0, 1)) / out.numel()
    assert model.layers[1].bias.grad.dtype == torch.float32
    torch.testing.assert_close(model.layers[1].bias.grad, expected, rtol=rtol, atol=1e-6)


def test_unknown_encoder_or_preset_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown encoder 'nosuch'.*squeezeformer, hybridformer, zipformer, conformer, e_branchformer"):
        parse_encoder("nosuch:sm")
    with pytest.raises(ValueError, match=r"unknown preset 'huge' for encoder 'conformer'; valid presets: ls100, ls960"):
        parse_encoder("conformer:huge")
    assert parse_encoder("E_Branchformer") == EncoderSpec("e_branchformer", "ls100", ESPNET)
    specs, notes = parse_encoders(["conformer:ls960,conformer", "conformer:ls960"])
    assert [spec.label for spec in specs] == ["conformer:ls960", "conformer:ls100"] and notes == []


def test_unknown_preset_of_our_encoder_lists_its_presets():
    with pytest.raises(ValueError, match=r"unknown preset 'huge' for encoder 'squeezeformer'; valid presets: xs, s, sm, m, ml, l"):
        parse_encoder("squeezeformer:huge")


def test_bench_command_reports_a_bad_name_and_exits_2(capsys, tmp_path):
    parser = argparse.ArgumentParser()
    bench_command.add_arguments(parser)
    args = parser.parse_args(["--encoders", "conformer:ls100", "transformer", "--out", str(tmp_path / "out")])
    assert bench_command.run(args) == 2
    assert "unknown encoder 'transformer'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bench_command_writes_the_report_of_an_espnet_baseline(tmp_path):
    parser = argparse.ArgumentParser()
    bench_command.add_arguments(parser)
    out = tmp_path / "out"
    argv = ["--encoders", "conformer:ls100", "--lengths", "0.05", "0.2", "--mode", "inference", "--flops-only"]
    assert bench_command.run(parser.parse_args(argv + ["--no-plots", "--out", str(out)])) == 0
    assert sorted(path.name for path in out.iterdir()) == ["results.json", "results.md"]
    result = json.loads((out / "results.json").read_text())
    assert result["complete"] is True and result["notes"] == []
    (encoder,) = result["encoders"]
    assert (encoder["label"], encoder["source"], encoder["config"]["output_size"]) == ("conformer:ls100", "espnet", 256)
    short, fine = result["cells"]
    assert short["status"] == "skipped" and "(5 < 7)" in short["note"]
    # conv2d subsampling: ((20 - 1) // 2 - 1) // 2 = 4 frames
    assert fine["status"] == "ok" and fine["output_shape"] == [2, 4, 256] and fine["flops"] > 0


def test_hybridformer_is_measured_in_its_deploy_form():
    from hybrid_encoders.bench.models import build_encoder

    spec = parse_encoder("hybridformer:s")
    assert spec.config() == {"preset": "s", "nsr_mode": "deploy"}
    encoder = build_encoder(spec, 80)
    assert not any(isinstance(module, torch.nn.BatchNorm1d) for module in encoder.modules())
