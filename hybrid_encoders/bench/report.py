"""Write a benchmark result (the dict of :meth:`hybrid_encoders.bench.harness.Benchmark.run`) as JSON, a Markdown
table and log-log PNG plots (time, peak memory and FLOPs against input length, one line per encoder)."""

import json
import pathlib
from typing import Dict, List, Optional

from hybrid_encoders.bench.harness import INFERENCE, MODES, TRAINING

_MB = 1024.0**2


def write_json(result: dict, path: pathlib.Path):
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


def _cells(result: dict) -> Dict[tuple, dict]:
    return {(cell["encoder"], cell["length_s"], cell["mode"]): cell for cell in result["cells"]}


def _seconds(cell: Optional[dict]) -> str:
    if cell is None:
        return ""
    if "median_s" not in cell:
        return "" if cell["status"] == "ok" else cell["status"]
    return f"{cell['median_s']:.3f} ({cell['min_s']:.3f}–{cell['max_s']:.3f})"


def _ratio(cell: Optional[dict], baseline: Optional[dict]) -> str:
    if not cell or not baseline or "median_s" not in cell or "median_s" not in baseline:
        return ""
    return f"{cell['median_s'] / baseline['median_s']:.2f}"


def _megabytes(cell: Optional[dict]) -> str:
    if not cell or cell.get("peak_bytes") is None:
        return ""
    return f"{cell['peak_bytes'] / _MB:.0f}"


def _gflops(cell: Optional[dict], batch: int) -> str:
    if not cell or "flops" not in cell:
        return ""
    return f"{cell['flops'] / batch / 1e9:.2f}"


def _efficiency(cell: Optional[dict]) -> str:
    if not cell or "gflops_per_s" not in cell:
        return ""
    share = f" ({100 * cell['efficiency']:.0f} %)" if "efficiency" in cell else ""
    return f"{cell['gflops_per_s']:.1f}{share}"


def _load(env: dict, when: str) -> str:
    load = env.get(f"load_average_{when}")
    return f"{load[0]:.1f}" if load else "unknown"


def markdown_table(result: dict) -> str:
    """One row per encoder and length; ratios are against the first encoder at the same length."""
    env, settings, machine = result["environment"], result["settings"], result["machine"]
    batch = settings["batch"]
    cells = _cells(result)
    baseline = result["encoders"][0]["label"]
    matmul = machine.get("matmul_gflops_best")
    protocol = (
        "FLOPs only"
        if settings["flops_only"]
        else f"{settings['warmup']} warm-up + {settings['runs']} timed runs (seconds per batch: median (min–max))"
    )
    precision = f"autocast {settings['amp']}" if settings.get("amp") else "fp32"
    lines = [
        f"torch {env['torch']}, {env['device_name']} ({env['device']}), {settings['threads']} threads, batch {batch}, "
        f"{precision}, {settings['feature_dim']}-dim features at {settings['frame_rate_hz']:g} Hz, {protocol}, "
        f"{result['started']} to {result['finished']}, 1-min load average {_load(env, 'start')} at the start and "
        f"{_load(env, 'end')} at the end ({env['cpu_count']} cores).",
        (
            f"Machine: {matmul:.1f} GFLOP/s on a {machine['matmul_size']}² fp32 matmul. "
            if matmul
            else "Machine GFLOP/s not measured. "
        )
        + "GFLOPs per utterance (FlopCounterMode: matmuls, convolutions and attention kernels, 2 FLOPs per multiply-accumulate); "
        "peak MB = memory growth during one run over what the process held before it; "
        f"×{baseline} = time relative to {baseline} at the same length.",
        "",
        "| encoder | params (M) | length (s) | fwd GFLOPs | inference s | ×base | inf. peak MB | fwd GFLOP/s (% of matmul) "
        "| training s | ×base | train. peak MB | fwd+bwd GFLOPs | min cpu/wall | flagged runs | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for encoder in result["encoders"]:
        label = encoder["label"]
        for length in settings["lengths_s"]:
            inference = cells.get((label, length, INFERENCE))
            training = cells.get((label, length, TRAINING))
            present = [cell for cell in (inference, training) if cell]
            ratios = [cell["min_cpu_ratio"] for cell in present if "min_cpu_ratio" in cell]
            notes = sorted({cell["note"] for cell in present if cell["note"]})
            row = [
                label,
                f"{encoder['params'] / 1e6:.2f}",
                f"{length:g}",
                _gflops(inference, batch),
                _seconds(inference),
                _ratio(inference, cells.get((baseline, length, INFERENCE))),
                _megabytes(inference),
                _efficiency(inference),
                _seconds(training),
                _ratio(training, cells.get((baseline, length, TRAINING))),
                _megabytes(training),
                _gflops(training, batch),
                f"{min(ratios):.2f}" if ratios else "",
                str(sum(cell["flagged_runs"] for cell in present if "flagged_runs" in cell)) if ratios else "",
                "; ".join(notes).replace("|", "/"),
            ]
            lines.append("| " + " | ".join(row) + " |")
    lines += training_comparison(result)
    if result.get("memory_note"):
        lines += ["", result["memory_note"]]
    return "\n".join(lines) + "\n"


def _share(cell: Optional[dict], other: Optional[dict], key: str) -> str:
    if not cell or not other or not cell.get(key) or not other.get(key):
        return ""
    return f"{cell[key] / other[key]:.2f}"


def training_comparison(result: dict) -> List[str]:
    """Training step time and peak memory of each encoder relative to the one it is compared with: its reference
    implementation (``compare_with`` in the encoder's info: icefall's Zipformer for ours, NeMo's Squeezeformer for
    ours) or else the first encoder. Empty when nothing was measured in training mode."""
    cells = _cells(result)
    baseline = result["encoders"][0]["label"]
    rows = []
    for encoder in result["encoders"]:
        other = encoder.get("compare_with", baseline)
        if other == encoder["label"] or "reference_for" in encoder:  # a reference is what the others are compared with
            continue
        for length in result["settings"]["lengths_s"]:
            cell = cells.get((encoder["label"], length, TRAINING))
            reference = cells.get((other, length, TRAINING))
            if not cell or "median_s" not in cell or not reference or "median_s" not in reference:
                continue
            rows.append(
                f"| {encoder['label']} | {other} | {length:g} | {_seconds(cell)} | {_seconds(reference)} "
                f"| {_share(cell, reference, 'median_s')} | {_megabytes(cell)} | {_megabytes(reference)} "
                f"| {_share(cell, reference, 'peak_bytes')} |"
            )
    if not rows:
        return []
    return [
        "",
        "Training step (forward + backward) against the implementation each encoder is compared with:",
        "",
        "| encoder | compared with | length (s) | training s | its training s | time × | peak MB | its peak MB "
        "| memory × |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]


def _plot(result: dict, path: pathlib.Path, title: str, ylabel: str, value) -> Optional[pathlib.Path]:
    """One panel per mode that has data; one line per encoder; ``value(cell)`` gives ``(y, low, high)`` or None.
    Points of cells with disturbed (flagged) runs get a black cross."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cells = _cells(result)
    lengths = result["settings"]["lengths_s"]
    panels = []
    for mode in MODES:
        lines = {}
        for encoder in result["encoders"]:
            points = [(length, cells.get((encoder["label"], length, mode))) for length in lengths]
            points = [(length, value(cell), cell.get("flagged_runs", 0)) for length, cell in points if value(cell)]
            if points:
                lines[encoder["label"]] = points
        if lines:
            panels.append((mode, lines))
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    for axis, (mode, lines) in zip(axes[0], panels):
        disturbed = []
        for label, points in lines.items():
            xs = [length for length, _, _ in points]
            ys = [found[0] for _, found, _ in points]
            below = [found[0] - found[1] for _, found, _ in points]
            above = [found[2] - found[0] for _, found, _ in points]
            axis.errorbar(xs, ys, yerr=[below, above], marker="o", capsize=3, label=label)
            disturbed += [(length, found[0]) for length, found, flagged in points if flagged]
        if disturbed:
            axis.scatter(*zip(*disturbed), marker="x", s=90, color="black", zorder=3, label="has disturbed runs")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks(lengths)
        axis.set_xticklabels([f"{length:g}" for length in lengths])
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel("input length (s)")
        axis.set_ylabel(ylabel)
        axis.set_title(f"{title}: {mode}")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    settings = result["settings"]
    figure.suptitle(
        f"{result['environment']['device_name']}, {settings['threads']} threads, batch {settings['batch']}", fontsize="small"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_plots(result: dict, out_dir: pathlib.Path) -> List[pathlib.Path]:
    """``time_vs_length.png`` (median with min–max bars), ``memory_vs_length.png`` (peak growth) and
    ``flops_vs_length.png`` (per utterance); a plot without any data is not written."""
    batch = result["settings"]["batch"]

    def seconds(cell):
        return (cell["median_s"], cell["min_s"], cell["max_s"]) if cell and "median_s" in cell else None

    def megabytes(cell):
        return (cell["peak_bytes"] / _MB,) * 3 if cell and cell.get("peak_bytes") else None

    def gflops(cell):
        return (cell["flops"] / batch / 1e9,) * 3 if cell and cell.get("flops") else None

    plots = [
        _plot(result, out_dir / "time_vs_length.png", "time per batch", "seconds", seconds),
        _plot(result, out_dir / "memory_vs_length.png", "peak memory growth", "MB", megabytes),
        _plot(result, out_dir / "flops_vs_length.png", "FLOPs per utterance", "GFLOPs", gflops),
    ]
    return [path for path in plots if path is not None]


def write_report(result: dict, out_dir: pathlib.Path, plots: bool = True) -> List[pathlib.Path]:
    """Write ``results.json``, ``results.md`` and (unless ``plots`` is False) the PNGs into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(result, out_dir / "results.json")
    (out_dir / "results.md").write_text(markdown_table(result), encoding="utf-8")
    written = [out_dir / "results.json", out_dir / "results.md"]
    if plots:
        written += write_plots(result, out_dir)
    return written
