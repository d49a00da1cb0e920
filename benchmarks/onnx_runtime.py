"""PyTorch eager fp32 against ONNX Runtime fp32 and int8: encoder inference time and peak memory (issue 15).

Issue 15's target, on the development CPU: ONNX Runtime int8 >= 2x faster than PyTorch fp32 for Zipformer-M at
30 s, batch 1 (the int8 WER bound is checked separately on the mini recipe, docs/deployment.md).

* the encoders: Squeezeformer-SM, HybridFormer-SM (re-parameterised deploy form), Zipformer-M, random weights, eval;
  each exported once with :func:`hybrid_encoders.deploy.onnx_export.export_graph` (the exporter of
  ``hybrid-encoders export onnx``, encoder only) and quantised with the export's int8 recipe;
* time: per (encoder, length, batch) the three runtimes take turns (warm-up, then ``--runs`` rounds of A B C), each
  run recording wall and process CPU time; with ``--threads N``, a CPU/wall ratio under ``0.75 N`` flags a run that
  lost its cores to another process (reported, not hidden);
* peak memory: one fresh interpreter per (encoder, runtime, length, batch), which loads the model or session, builds
  the input, then measures the resident-set growth of one call (:class:`hybrid_encoders.bench.harness.MemoryProbe`).

    python benchmarks/onnx_runtime.py [--encoders squeezeformer hybridformer zipformer] [--lengths 10 30]
        [--batches 1 8] [--runs 5] [--threads 2] [--out onnx_runtime.json]
    python benchmarks/onnx_runtime.py --tiny --lengths 2 --batches 1 2 --runs 1   # does it run (seconds)
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from hybrid_encoders.bench.harness import MemoryProbe
from hybrid_encoders.deploy.graphs import EncoderGraph, FeatureNormalization
from hybrid_encoders.deploy.onnx_export import export_graph, feature_graph_spec, quantize_int8
from hybrid_encoders.encoders.hybridformer import HybridformerEncoder
from hybrid_encoders.encoders.squeezeformer import SqueezeformerEncoder
from hybrid_encoders.encoders.zipformer import ZipformerEncoder

RUNTIMES = ("pytorch_fp32", "ort_fp32", "ort_int8")
PRESETS = {"squeezeformer": "sm", "hybridformer": "sm", "zipformer": "m"}
TINY = {
    "squeezeformer": {"output_size": 32, "attention_heads": 2, "num_blocks": 4},
    "hybridformer": {"output_size": 32, "attention_heads": 2, "num_blocks": 4},
    "zipformer": {"num_encoder_layers": 1, "encoder_dim": 32, "encoder_unmasked_dim": 16, "feedforward_dim": 64},
}
TARGET = ("zipformer", 30.0, 1, 2.0)  # encoder, length, batch, ORT int8 speed-up over PyTorch fp32


def build(name: str, tiny: bool) -> torch.nn.Module:
    """The encoder in eval mode, random weights (seed 0); HybridFormer folded into its deploy form."""
    torch.manual_seed(0)
    cls = {"squeezeformer": SqueezeformerEncoder, "hybridformer": HybridformerEncoder, "zipformer": ZipformerEncoder}
    conf = TINY[name] if tiny else {"preset": PRESETS[name]}
    encoder = cls[name](80, **conf).eval()
    if name == "hybridformer":
        encoder.reparameterize()
    return encoder


def export(name: str, encoder: torch.nn.Module, folder: pathlib.Path) -> None:
    """``folder/{name}.onnx`` (encoder output, no head) and ``folder/{name}.int8.onnx``."""
    graph = EncoderGraph(FeatureNormalization(None, None), encoder, torch.nn.Identity(), None)
    spec = feature_graph_spec(name, graph, encoder, ["encoder_out", "encoder_out_lens"], {})
    export_graph(spec, folder / f"{name}.onnx", opset=18)
    quantize_int8(folder / f"{name}.onnx", folder / f"{name}.int8.onnx")


def make_runner(runtime: str, name: str, folder: pathlib.Path, tiny: bool, threads: int, features, lengths):
    """A zero-argument callable running one encoder forward on fixed inputs."""
    if runtime == "pytorch_fp32":
        encoder = build(name, tiny)
        xs, ilens = torch.from_numpy(features), torch.from_numpy(lengths)

        def run_pytorch():
            with torch.no_grad():
                encoder(xs, ilens)

        return run_pytorch
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    suffix = ".int8.onnx" if runtime == "ort_int8" else ".onnx"
    session = ort.InferenceSession(str(folder / f"{name}{suffix}"), options, providers=["CPUExecutionProvider"])
    inputs = {"x": features, "x_lens": lengths}
    return lambda: session.run(None, inputs)


def inputs(length_s: float, batch: int):
    frames = int(round(length_s * 100))
    generator = np.random.default_rng(0)
    return generator.standard_normal((batch, frames, 80)).astype(np.float32), np.full(batch, frames, dtype=np.int64)


def memory_child(args) -> dict:
    """In a fresh interpreter: peak RSS growth of one call (model/session loaded and input built beforehand)."""
    torch.set_num_threads(args.threads)
    features, lengths = inputs(args.length, args.batch)
    runner = make_runner(args.memory_child, args.encoder, pathlib.Path(args.folder), args.tiny, args.threads,
                         features, lengths)  # fmt: skip
    runner()  # warm-up: session initialisation and first-call allocations are not inference memory
    probe = MemoryProbe("cpu")
    if probe.note:
        raise RuntimeError(probe.note)
    growth, _, _ = probe.measure(runner)
    return {"peak_growth_bytes": growth}


def measure_memory(runtime, name, folder, length_s, batch, args) -> int:
    command = [sys.executable, __file__, "--memory-child", runtime, "--encoder", name, "--folder", str(folder),
               "--length", str(length_s), "--batch", str(batch), "--threads", str(args.threads)]
    if args.tiny:
        command.append("--tiny")
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_growth_bytes"]


def time_cell(name, folder, length_s, batch, args) -> dict:
    """Alternating timed rounds of the three runtimes on one input."""
    features, lengths = inputs(length_s, batch)
    runners = {runtime: make_runner(runtime, name, folder, args.tiny, args.threads, features, lengths)
               for runtime in RUNTIMES}  # fmt: skip
    for runner in runners.values():
        runner()
    runs = {runtime: [] for runtime in RUNTIMES}
    for _ in range(args.runs):
        for runtime, runner in runners.items():
            wall, cpu = time.perf_counter(), time.process_time()
            runner()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            runs[runtime].append({"wall_s": wall, "cpu_s": cpu, "cpu_ratio": cpu / wall})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--lengths", nargs="+", type=float, default=[10.0, 30.0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="tiny random encoders: check that the script runs")
    parser.add_argument("--out", default="onnx_runtime.json")
    parser.add_argument("--memory-child", choices=RUNTIMES, help=argparse.SUPPRESS)
    parser.add_argument("--encoder", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args)))
        return
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = pathlib.Path(scratch)
        for name in args.encoders:
            print(f"exporting {name}", file=sys.stderr, flush=True)
            export(name, build(name, args.tiny), folder)
            for length_s in args.lengths:
                for batch in args.batches:
                    runs = time_cell(name, folder, length_s, batch, args)
                    row = {"encoder": name, "length_s": length_s, "batch": batch, "runs": runs}
                    for runtime in RUNTIMES:
                        row[f"{runtime}_s"] = statistics.median(run["wall_s"] for run in runs[runtime])
                        row[f"{runtime}_peak_mb"] = measure_memory(runtime, name, folder, length_s, batch, args) / 2**20
                    row["cpu_ratio_min"] = min(run["cpu_ratio"] for runtime in RUNTIMES for run in runs[runtime])
                    rows.append(row)
                    print(f"{name} {length_s:g} s x{batch}: " + ", ".join(
                        f"{runtime} {row[f'{runtime}_s']:.3f} s / {row[f'{runtime}_peak_mb']:.0f} MB" for runtime in RUNTIMES
                    ), file=sys.stderr, flush=True)  # fmt: skip
    result = {"settings": {k: v for k, v in vars(args).items() if v is not None}, "torch": torch.__version__,
              "load_average": os.getloadavg(), "rows": rows}  # fmt: skip
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1))
    print_table(rows, args)


def print_table(rows, args) -> None:
    print(f"\n{args.threads} thread(s), median of {args.runs} alternating runs; peak = RSS growth of one call")
    print("| encoder | length | batch | PyTorch fp32 s | ORT fp32 s | ORT int8 s | int8 speed-up | peak MB (PT / ORT / int8) "
          "| CPU/wall min |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['encoder']} | {row['length_s']:g} s | {row['batch']} | {row['pytorch_fp32_s']:.3f} | "
            f"{row['ort_fp32_s']:.3f} | {row['ort_int8_s']:.3f} | {row['pytorch_fp32_s'] / row['ort_int8_s']:.2f}x | "
            f"{row['pytorch_fp32_peak_mb']:.0f} / {row['ort_fp32_peak_mb']:.0f} / {row['ort_int8_peak_mb']:.0f} | "
            f"{row['cpu_ratio_min']:.2f} |"
        )
    name, length_s, batch, speedup = TARGET
    for row in rows:
        if (row["encoder"], row["length_s"], row["batch"]) == (name, length_s, batch) and not args.tiny:
            measured = row["pytorch_fp32_s"] / row["ort_int8_s"]
            print(f"target: ORT int8 >= {speedup}x PyTorch fp32 for {name} at {length_s:g} s, batch {batch}: "
                  f"{measured:.2f}x ({'met' if measured >= speedup else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
