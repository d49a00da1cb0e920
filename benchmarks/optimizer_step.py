"""ScaledAdam's step against torch.optim.Adam's for a Zipformer-M sized parameter set (issue 6's target: <= 1.5x).

The parameter shapes are those of icefall's Zipformer-M encoder state dict (``--shapes``, default
``../shared/research/zipformer_m_state_dict.txt``: 731 tensors, 63,994,103 elements; the 0-dim ``log_scale`` tensors
are ScaledAdam's scalars). Both optimizers get their own copy of the same random parameters and gradients, with
their defaults (Adam: torch's choice of implementation for the device, lr 1e-3; ScaledAdam: lr 0.045, clipping on).

Each optimizer first runs ``--warmup`` steps (state allocation, and ScaledAdam's first clipping threshold at its
10th step). Then ``--repeats`` rounds alternate one block of ``--steps`` Adam steps with one block of ScaledAdam steps
(the default 8 steps are two of ScaledAdam's scale-learning periods), so that a busy shared machine disturbs both
alike; a step's time is its block's mean, and the table reports the median over rounds, of the wall time and of
the process CPU time (the steadier of the two on a shared machine). Prints a table and writes JSON.

    python benchmarks/optimizer_step.py [--threads 2] [--repeats 5] [--out optimizer_step.json]
"""

import argparse
import math
import os
import pathlib
import re
import statistics
import time
import warnings

import torch

from hybrid_encoders.bench.harness import Settings, environment
from hybrid_encoders.bench.report import write_json
from hybrid_encoders.optim.scaled_adam import ExternalClippingWarning, ScaledAdam

DEFAULT_SHAPES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "research" / "zipformer_m_state_dict.txt"
TARGET_RATIO = 1.5


def read_shapes(path: pathlib.Path):
    """Tensor shapes from a ``key<TAB>(d0, d1, ...)<TAB>dtype`` listing; ``#`` lines are comments."""
    shapes = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(f"{path}: expected 'key<TAB>shape<TAB>dtype', got {line!r}")
        shapes.append(tuple(int(size) for size in re.findall(r"\d+", fields[1])))
    return shapes


def make_parameters(shapes, device: str, seed: int):
    """Random parameters (with gradients attached) of the given shapes."""
    generator = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter((torch.randn(shape, generator=generator) * 0.05).to(device))
        p.grad = (torch.randn(shape, generator=generator) * 1e-3).to(device)
        params.append(p)
    return params


def time_block(optimizer, steps: int, device: str):
    """Mean wall and process CPU seconds of one step over a block of ``steps`` steps."""
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=pathlib.Path, default=DEFAULT_SHAPES, help="state-dict shape listing")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--warmup", type=int, default=12, help="untimed steps per optimizer first")
    parser.add_argument("--steps", type=int, default=8, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds of timed blocks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("optimizer_step.json"), help="JSON result")
    args = parser.parse_args(argv)
    for key in ("threads", "steps", "repeats"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be >= 1")
    torch.set_num_threads(args.threads)

    # The gradients stay the same at every step, so their norm repeats exactly, which ScaledAdam's check for
    # gradients clipped by the trainer reports; here that is expected.
    warnings.simplefilter("ignore", ExternalClippingWarning)

    shapes = read_shapes(args.shapes)
    elements = sum(math.prod(shape) for shape in shapes)
    optimizers = {
        "adam": torch.optim.Adam(make_parameters(shapes, args.device, args.seed)),
        "scaled_adam": ScaledAdam(make_parameters(shapes, args.device, args.seed)),
    }
    env = environment(Settings(threads=args.threads, device=args.device))  # records the load average at the start
    for optimizer in optimizers.values():
        for _ in range(args.warmup):
            optimizer.step()
    blocks = {name: [] for name in optimizers}
    for _ in range(args.repeats):
        for name, optimizer in optimizers.items():
            blocks[name].append(time_block(optimizer, args.steps, args.device))

    step_s, ratios = {}, {}
    for clock, column in (("wall", 0), ("cpu", 1)):
        for name, values in blocks.items():
            times = [block[column] for block in values]
            summary = {"median": statistics.median(times), "min": min(times), "max": max(times), "blocks": times}
            step_s.setdefault(name, {})[clock] = summary
        ratios[clock] = step_s["scaled_adam"][clock]["median"] / step_s["adam"][clock]["median"]
    env["load_average_end"] = list(os.getloadavg())
    result = {
        "environment": env,
        "settings": {key: str(value) if isinstance(value, pathlib.Path) else value for key, value in vars(args).items()},
        "parameters": {"tensors": len(shapes), "elements": elements},
        "step_s": step_s,
        "ratio_scaled_adam_to_adam": ratios,
        "target_ratio": TARGET_RATIO,
        "within_target": {clock: ratio <= TARGET_RATIO for clock, ratio in ratios.items()},
    }
    write_json(result, args.out)

    print(
        f"{len(shapes)} tensors, {elements:,} elements, device {args.device}, {args.threads} threads, load average "
        f"{env['load_average_start']} at the start, {env['load_average_end']} at the end"
    )
    print("| optimizer | wall median (s) | wall min-max (s) | CPU median (s) | CPU min-max (s) |")
    print("|---|---|---|---|---|")
    for name, clocks in step_s.items():
        wall, cpu = clocks["wall"], clocks["cpu"]
        print(
            f"| {name} | {wall['median']:.4f} | {wall['min']:.4f}-{wall['max']:.4f} | {cpu['median']:.4f} | "
            f"{cpu['min']:.4f}-{cpu['max']:.4f} |"
        )
    for clock, ratio in ratios.items():
        verdict = "within" if ratio <= TARGET_RATIO else "ABOVE"
        print(f"ratio scaled_adam / adam ({clock}) = {ratio:.2f} ({verdict} the {TARGET_RATIO}x target)")
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
