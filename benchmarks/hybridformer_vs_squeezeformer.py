"""HybridFormer (deploy mode) against our Squeezeformer: CPU inference time and peak memory at 10 / 30 / 60 s.

Issue 4's targets, on the development CPU (2 threads, batch 2, eval, no_grad, same preset): HybridFormer >= 1.18x
faster at 30 s and >= 1.5x at 60 s, peak memory at 60 s <= 0.7x Squeezeformer's.

* time: :class:`hybrid_encoders.bench.harness.Benchmark` (both models in one process, warm-up, then timed rounds that
  alternate A B A B; every run records its process CPU/wall ratio: with 2 threads, >= 1.8 means the run had both
  cores to itself, lower means another process took CPU time and the run is slower than the model);
* peak memory: one fresh interpreter per (model, length) that builds the model and the input, then measures the
  resident-set growth of one forward (:class:`hybrid_encoders.bench.harness.MemoryProbe`), so that neither the other
  model nor allocator caches of earlier runs hide or inflate it.

    python benchmarks/hybridformer_vs_squeezeformer.py [--preset sm] [--runs 5] \
        [--out hybridformer_vs_squeezeformer.json]
"""

import argparse
import json
import statistics
import subprocess
import sys

import torch

from hybrid_encoders.bench.harness import INFERENCE, Benchmark, Candidate, MemoryProbe, Settings
from hybrid_encoders.encoders.hybridformer import HybridformerEncoder
from hybrid_encoders.encoders.squeezeformer import SqueezeformerEncoder

LENGTHS_S = (10.0, 30.0, 60.0)
TARGETS = {"speedup_30s": 1.18, "speedup_60s": 1.5, "memory_ratio_60s": 0.7}


def build(model: str, preset: str, input_size: int = 80) -> torch.nn.Module:
    """``squeezeformer`` or ``hybridformer`` (its default layout, re-parameterised into deploy mode), in eval mode."""
    if model == "squeezeformer":
        return SqueezeformerEncoder(input_size, preset=preset).eval()
    encoder = HybridformerEncoder(input_size, preset=preset).eval()
    encoder.reparameterize()
    return encoder


def memory_child(model: str, preset: str, length_s: float, batch: int, threads: int) -> dict:
    """Runs in the fresh interpreter: peak RSS growth of one inference forward."""
    torch.set_num_threads(threads)
    encoder = build(model, preset)
    frames = int(round(length_s * 100))
    xs = torch.randn(batch, frames, 80, generator=torch.Generator().manual_seed(0))
    ilens = torch.full((batch,), frames)

    def forward():
        with torch.no_grad():
            encoder(xs, ilens)

    probe = MemoryProbe("cpu")
    if probe.note:
        raise RuntimeError(probe.note)
    growth, before, peak = probe.measure(forward)
    return {
        "model": model, "length_s": length_s, "peak_growth_bytes": growth, "before_bytes": before, "peak_bytes": peak
    }


def measure_memory(model: str, preset: str, length_s: float, batch: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--memory-child", model, "--preset", preset, "--length", str(length_s),
               "--batch", str(batch), "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _median_cpu(cell: dict) -> float:
    return statistics.median(run["cpu_s"] for run in cell["runs"])


def summarise(timing: dict, memory: dict, preset: str) -> list:
    cells = {(cell["encoder"], cell["length_s"]): cell for cell in timing["cells"]}
    rows = []
    for length_s in LENGTHS_S:
        squeeze, hybrid = cells[(f"squeezeformer:{preset}", length_s)], cells[(f"hybridformer:{preset}", length_s)]
        ratios = [run["cpu_ratio"] for cell in (squeeze, hybrid) for run in cell["runs"]]
        mem_s, mem_h = memory[("squeezeformer", length_s)], memory[("hybridformer", length_s)]
        rows.append({
            "length_s": length_s,
            "squeezeformer_s": squeeze["median_s"],
            "hybridformer_s": hybrid["median_s"],
            "speedup": squeeze["median_s"] / hybrid["median_s"],
            # Process CPU time is what each model consumed even when other processes took the cores, so its ratio is
            # the better estimate on a busy machine (equal to the wall-time ratio on a quiet one).
            "cpu_time_speedup": _median_cpu(squeeze) / _median_cpu(hybrid),
            "cpu_ratio_min": min(ratios),
            "cpu_ratio_median": statistics.median(ratios),
            "squeezeformer_peak_mb": mem_s["peak_growth_bytes"] / 2**20,
            "hybridformer_peak_mb": mem_h["peak_growth_bytes"] / 2**20,
            "memory_ratio": mem_h["peak_growth_bytes"] / mem_s["peak_growth_bytes"],
        })
    return rows


def print_table(rows: list, preset: str, batch: int, threads: int) -> None:
    print(
        f"\npreset {preset}, batch {batch}, {threads} thread(s), eval + no_grad, HybridFormer in deploy mode "
        "(median of the runs)"
    )
    print(
        "| length | Squeezeformer s | HybridFormer s | speed-up | CPU-time speed-up | CPU/wall min (median) "
        "| peak MB Sq | peak MB Hy | mem ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['length_s']:g} s | {row['squeezeformer_s']:.3f} | {row['hybridformer_s']:.3f} | "
            f"{row['speedup']:.2f}x | {row['cpu_time_speedup']:.2f}x | "
            f"{row['cpu_ratio_min']:.2f} ({row['cpu_ratio_median']:.2f}) | "
            f"{row['squeezeformer_peak_mb']:.0f} | {row['hybridformer_peak_mb']:.0f} | {row['memory_ratio']:.2f} |"
        )
    by_length = {row["length_s"]: row for row in rows}
    print(
        f"targets: speed-up 30 s >= {TARGETS['speedup_30s']} ({by_length[30.0]['speedup']:.2f}), "
        f"60 s >= {TARGETS['speedup_60s']} ({by_length[60.0]['speedup']:.2f}); memory 60 s <= "
        f"{TARGETS['memory_ratio_60s']} ({by_length[60.0]['memory_ratio']:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sm", choices=sorted(HybridformerEncoder.PRESETS))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-retries", type=int, default=2, help="repeats of a run that lost its cores (harness)")
    parser.add_argument("--out", default="hybridformer_vs_squeezeformer.json")
    parser.add_argument("--memory-child", choices=["squeezeformer", "hybridformer"], help=argparse.SUPPRESS)
    parser.add_argument("--length", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.preset, args.length, args.batch, args.threads)))
        return

    memory = {}
    for length_s in LENGTHS_S:
        for model in ("squeezeformer", "hybridformer"):
            memory[(model, length_s)] = measure_memory(model, args.preset, length_s, args.batch, args.threads)
            print(f"memory {model} @ {length_s:g} s: {memory[(model, length_s)]['peak_growth_bytes'] / 2**20:.0f} MB",
                  file=sys.stderr, flush=True)
    candidates = [
        Candidate(f"squeezeformer:{args.preset}", lambda size: build("squeezeformer", args.preset, size)),
        Candidate(f"hybridformer:{args.preset}", lambda size: build("hybridformer", args.preset, size),
                  {"nsr_mode": "deploy", "attention_types": "by_rate"}),
    ]
    settings = Settings(lengths_s=LENGTHS_S, batch=args.batch, threads=args.threads, runs=args.runs, warmup=1,
                        modes=(INFERENCE,), matmul_size=0, max_retries=args.max_retries)
    timing = Benchmark(candidates, settings).run()
    rows = summarise(timing, memory, args.preset)
    print_table(rows, args.preset, args.batch, args.threads)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump({"preset": args.preset, "targets": TARGETS, "summary": rows, "memory": list(memory.values()),
                   "timing": timing}, handle, indent=1)


if __name__ == "__main__":
    main()
