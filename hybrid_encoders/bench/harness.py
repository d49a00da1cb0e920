"""Measure encoders side by side: inference and training time, peak memory, FLOPs and parameters.

Protocol (the one the upstream reference figures in docs/benchmarks.md were taken with, made robust for a shared
machine):

* input: ``batch`` random N(0, 1) feature sequences of ``round(length_s * frame_rate_hz)`` frames, all full length;
* inference: ``model.eval()`` under ``torch.no_grad()``; training: ``model.train()``, forward, backward of the mean
  square of the output (gradients are dropped after each step, the optimizer step is not timed). Every training step
  starts from the same seed of torch's and Python's generators, so the random skips, dropouts and regularisers
  draw alike in every run (and the memory probe is repeatable), and models with training schedules (Zipformer's,
  ours or icefall's) are put at schedule position ``batch_count``;
* per (length, mode): ``warmup`` untimed runs of every encoder, one memory probe per encoder, then ``runs`` timed rounds
  in which the encoders take turns (A B C A B C ...), so a slow phase of the machine hits all of them alike;
* every run records wall time and process CPU time. A timed run whose CPU/wall ratio is below ``min_cpu_ratio`` (or,
  for a cell too small to keep all threads busy, below 0.8 x the best ratio the cell reached, but at least 0.8) lost
  its cores to another process. After the timed rounds, such runs are repeated in up to ``max_retries`` extra rounds (again
  taking turns); each keeps its attempt with the best ratio and stays flagged when none reached the bar;
* FLOPs: :class:`torch.utils.flop_counter.FlopCounterMode` over one forward (and one training step); it counts
  matrix products and convolutions only, 2 FLOPs per multiply-accumulate;
* the machine's own matmul GFLOP/s is measured in the same run, so each encoder's achieved GFLOP/s can be read as a
  fraction of what the hardware does on a plain large matmul.

Peak memory of a measurement is the growth over what the process held just before it: on CPU the resident set
(``VmHWM`` after resetting it through ``/proc/self/clear_refs``, with freed heap first handed back by
``malloc_trim`` so that re-used allocator caches do not hide the growth), on CUDA ``torch.cuda.max_memory_allocated``.
"""

import ctypes
import dataclasses
import datetime
import os
import platform
import random
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, sdpa_backward_flop_count, sdpa_flop_count

SCHEMA = "hybrid-encoders-bench/1"
INFERENCE = "inference"
TRAINING = "training"
MODES = (INFERENCE, TRAINING)
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass
class Settings:
    """What to measure and how.

    Args:
        lengths_s: input lengths in seconds.
        batch: sequences per forward.
        threads: ``torch.set_num_threads`` for the whole run.
        runs: timed runs per cell (median, min, max are reported).
        warmup: untimed runs per cell before the memory probe and the timed runs.
        modes: subset of :data:`MODES`.
        device: ``"cpu"`` or ``"cuda"``.
        feature_dim: feature dimension (80 fbank bins).
        frame_rate_hz: feature frames per second (10 ms shift).
        min_cpu_ratio: CPU/wall ratio under which a run counts as disturbed; ``None``: ``0.75 * threads`` on CPU, and
            no check on CUDA (the host waits for the device there, so the ratio says nothing).
        max_retries: repetitions of one disturbed run at most.
        flops_only: count FLOPs and parameters only, no timing or memory.
        matmul_size: side of the square fp32 matmul that measures the machine's GFLOP/s (0: do not measure).
        seed: seed of the random inputs, and of the generators at the start of every training step.
        batch_count: schedule position (optimizer steps) of models with training schedules (Zipformer): 0 is the
            first step, where skips, dropout and regularisers run at their highest rates; icefall's settle by 20000.
        live_memory: CPU only: fix glibc's mmap threshold at :data:`LIVE_MEMORY_MMAP_THRESHOLD` for the whole run,
            so that every tensor of 64 KiB or more is returned to the system when freed and the resident set follows
            the live tensors (what ``torch.cuda.max_memory_allocated`` reports on a GPU) instead of what the heap
            keeps. With glibc's default, adaptive threshold the heap keeps hundreds of MB of freed activations during
            a training step, which hides differences in what the step really keeps. Costs page faults (time).
        amp: ``None`` (fp32), or the dtype of automatic mixed precision, ``"bf16"`` or ``"fp16"``: every forward runs
            under ``torch.autocast(device, dtype)``, as ESPnet's trainer runs it with ``--use_amp true`` (the
            backward follows the dtypes autocast chose; the loss scaling of fp16 training is not timed).
    """

    lengths_s: Sequence[float] = (5.0, 10.0, 30.0, 60.0)
    batch: int = 2
    threads: int = 2
    runs: int = 5
    warmup: int = 1
    modes: Sequence[str] = MODES
    device: str = "cpu"
    feature_dim: int = 80
    frame_rate_hz: float = 100.0
    min_cpu_ratio: Optional[float] = None
    max_retries: int = 2
    flops_only: bool = False
    matmul_size: int = 2048
    seed: int = 0
    batch_count: int = 0
    live_memory: bool = False
    amp: Optional[str] = None

    def __post_init__(self):
        self.lengths_s = [float(length) for length in self.lengths_s]
        self.modes = list(self.modes)
        for key in ("batch", "threads", "runs", "feature_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("warmup", "max_retries", "matmul_size", "batch_count"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not self.lengths_s or min(self.lengths_s) <= 0:
            raise ValueError(f"lengths_s must be positive seconds, got {list(self.lengths_s)}")
        unknown = [mode for mode in self.modes if mode not in MODES]
        if unknown or not self.modes:
            raise ValueError(f"modes must be a non-empty subset of {MODES}, got {list(self.modes)}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got '{self.device}'")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for, but torch.cuda.is_available() is False")
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise ValueError(f"amp must be None or one of {sorted(AMP_DTYPES)}, got '{self.amp}'")
        if self.min_cpu_ratio is None:
            self.min_cpu_ratio = 0.75 * self.threads if self.device == "cpu" else 0.0

    def frames(self, length_s: float) -> int:
        return int(round(length_s * self.frame_rate_hz))


@dataclasses.dataclass
class Candidate:
    """One encoder under test.

    Args:
        label: unique name in tables and plots, e.g. ``conformer:ls100``.
        build: ``build(input_size) -> module`` with ESPnet's encoder interface ``forward(xs_pad (B, T, F), ilens (B,))
            -> (xs (B, T', D), olens, states)`` (``xs`` may be a tuple whose first element is the output).
        info: extra fields copied into the JSON (name, preset, source, config).
    """

    label: str
    build: Callable[[int], torch.nn.Module]
    info: dict = dataclasses.field(default_factory=dict)


class SystemClock:
    """Wall time (``perf_counter``) and CPU time of the whole process, all threads (``process_time``)."""

    def read(self) -> Tuple[float, float]:
        return time.perf_counter(), time.process_time()


class MemoryProbe:
    """Peak memory of one call, as growth over what was in use just before it (see the module docstring)."""

    def __init__(self, device: str):
        self.device = device
        self.note = ""
        if device == "cpu":
            self._trim = _malloc_trim()
            try:
                _reset_rss_peak()
            except OSError as error:
                self.note = f"no CPU peak memory: cannot reset the peak RSS through /proc/self/clear_refs ({error})"

    def measure(self, call: Callable[[], None]) -> Tuple[Optional[int], Optional[int], Optional[int]]:
        """Run ``call`` once; return ``(peak growth, memory in use before, absolute peak)`` in bytes."""
        if self.note:
            call()
            return None, None, None
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            call()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            self._trim()
            _reset_rss_peak()
            before = _proc_status_bytes("VmRSS")
            call()
            peak = _proc_status_bytes("VmHWM")
        return peak - before, before, peak


LIVE_MEMORY_MMAP_THRESHOLD = 64 * 1024
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def fix_mmap_threshold(threshold: int) -> bool:
    """glibc ``mallopt(M_MMAP_THRESHOLD, threshold)`` (which also ends its adaptive threshold); False where the C
    library has no ``mallopt`` or refuses."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


def _malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``, or a no-op where the C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


def _reset_rss_peak():
    # Writing "5" resets the process's VmHWM to its current VmRSS (Linux >= 4.0, proc(5)).
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _output(result) -> torch.Tensor:
    """The encoder output (B, T', D) of an ESPnet encoder's return value ``(xs or (xs, intermediate), olens, _)``."""
    xs = result[0]
    return xs[0] if isinstance(xs, (tuple, list)) else xs


def set_batch_count(model: torch.nn.Module, batch_count: int) -> None:
    """Put a model's training schedules at ``batch_count``: its ``set_batch_count`` method if it has one (the icefall
    wrapper), else its ``batch_count`` buffer (ours, loaded so that the step counter restarts from it); a no-op for
    models without schedules."""
    if hasattr(model, "set_batch_count"):
        model.set_batch_count(batch_count)
    elif "batch_count" in model.state_dict():
        model.load_state_dict({"batch_count": torch.tensor(batch_count, dtype=torch.int64)}, strict=False)


class _Step:
    """One inference forward or one training step of a model on fixed inputs, the forward under autocast to
    ``amp`` (a key of :data:`AMP_DTYPES`) where one is given."""

    def __init__(
        self, model: torch.nn.Module, mode: str, xs: torch.Tensor, ilens: torch.Tensor, seed: int = 0,
        amp: Optional[str] = None,
    ):
        self.model, self.mode, self.xs, self.ilens, self.seed = model, mode, xs, ilens, seed
        self.amp = amp

    def _forward(self) -> torch.Tensor:
        if self.amp is None:
            return _output(self.model(self.xs, self.ilens))
        with torch.autocast(self.xs.device.type, dtype=AMP_DTYPES[self.amp]):
            return _output(self.model(self.xs, self.ilens))

    def prepare(self):
        """Put the model in the mode's state, drop old gradients and, for training, seed torch's and Python's
        generators (outside the timed region)."""
        self.model.train(self.mode == TRAINING)
        self.model.zero_grad(set_to_none=True)
        if self.mode == TRAINING:
            torch.manual_seed(self.seed)
            random.seed(self.seed)

    def __call__(self) -> torch.Tensor:
        if self.mode == INFERENCE:
            with torch.no_grad():
                out = self._forward()
        else:
            out = self._forward()
            out.float().pow(2).mean().backward()
        if self.xs.is_cuda:
            torch.cuda.synchronize()
        return out


def _conv_backward_flops(
    grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed, _output_padding, _groups,
    output_mask, out_shape=None,
) -> int:
    """FLOPs of ``aten.convolution_backward``: each multiply-accumulate of the forward convolution appears once in the
    input gradient and once in the weight gradient, so each requested gradient costs exactly the forward FLOPs.

    Replaces torch's own formula, whose weight-gradient term ignores ``groups`` and so counts a depthwise
    convolution's backward ``channels`` times too high (torch 2.11: 8.2 GFLOPs instead of 64 MFLOPs for a
    256-channel, kernel-31 depthwise Conv1d over 2 x 1000 frames).
    """
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *_args, out_shape=None, **_kwargs) -> int:
    """FLOPs of the CPU kernel behind ``scaled_dot_product_attention``: the two matmuls ``q k^T`` and ``p v``."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *_args, out_shape=None, **_kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# Formulas that torch 2.11's FlopCounterMode gets wrong or lacks: without the two CPU attention kernels, every
# encoder that calls F.scaled_dot_product_attention on CPU would have its attention counted as 0 FLOPs.
_FLOP_FORMULAS = {
    torch.ops.aten.convolution_backward: _conv_backward_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}


def count_flops(step: Callable[[], torch.Tensor]) -> Tuple[int, torch.Tensor]:
    """FLOPs (2 per multiply-accumulate: matmuls, convolutions, attention kernels) of one call of ``step``, and its
    output."""
    counter = FlopCounterMode(display=False, custom_mapping=_FLOP_FORMULAS)
    with counter:
        out = step()
    return counter.get_total_flops(), out


def measure_matmul_gflops(size: int, device: str, repeats: int = 5) -> float:
    """GFLOP/s of a ``size`` x ``size`` fp32 matmul (median of ``repeats`` after one warm-up): the machine's
    practical peak, against which the encoders' achieved GFLOP/s are compared."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    times = []
    for index in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        if index:
            times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def _failure(error: BaseException) -> Optional[Tuple[str, str]]:
    """``(status, note)`` for the errors that end one cell and let the run go on; ``None`` for everything else."""
    if isinstance(error, TooShortUttError):
        return "skipped", f"too short: {error} ({error.actual_size} < {error.limit})"
    message = str(error)
    if isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)
    ):
        return "oom", f"out of memory: {message.splitlines()[0] if message else type(error).__name__}"
    return None


def _guarded(cell: dict, action: Callable[[], object], device: str):
    """Run ``action``; on a too-short input or out-of-memory, mark ``cell`` and return ``None``."""
    try:
        return action()
    except (TooShortUttError, RuntimeError) as error:
        failure = _failure(error)
        if failure is None:
            raise
        cell["status"], cell["note"] = failure
        if device == "cuda":
            torch.cuda.empty_cache()
        return None


def environment(settings: Settings) -> dict:
    """Versions and hardware the numbers belong to."""
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": settings.device,
        "device_name": torch.cuda.get_device_name() if settings.device == "cuda" else _cpu_model(),
        "load_average_start": _load_average(),
        "argv": sys.argv,
    }
    for package in ("espnet", "hybrid_encoders"):
        module = sys.modules.get(package)
        env[f"{package}_version"] = getattr(module, "__version__", None)
    return env


def _load_average() -> Optional[List[float]]:
    """1, 5 and 15 minute load averages: above the core count, other processes competed for the CPU."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _summarise(cell: dict, flops: Optional[int], machine_gflops: Optional[float]):
    """Median/min/max wall time and median CPU time of the kept runs, and the achieved GFLOP/s."""
    times = [run["wall_s"] for run in cell["runs"]]
    if not times:
        return
    cell["median_s"] = statistics.median(times)
    cell["median_cpu_s"] = statistics.median(run["cpu_s"] for run in cell["runs"])
    cell["min_s"], cell["max_s"] = min(times), max(times)
    cell["flagged_runs"] = sum(run["flagged"] for run in cell["runs"])
    cell["min_cpu_ratio"] = min(run["cpu_ratio"] for run in cell["runs"])
    if flops:
        cell["gflops_per_s"] = flops / cell["median_s"] / 1e9
        if machine_gflops:
            cell["efficiency"] = cell["gflops_per_s"] / machine_gflops


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _result(header: dict, cells: List[dict], complete: bool) -> dict:
    """The JSON-ready result: ``header`` (schema, environment, settings, machine, encoders) plus the summarised cells."""
    best = max(header["machine"]["matmul_gflops"], default=None)
    header["machine"]["matmul_gflops_best"] = best
    for cell in cells:
        _summarise(cell, cell.get("flops"), best)
    environment_now = {**header["environment"], "load_average_end": _load_average()}
    return {**header, "environment": environment_now, "finished": _now(), "complete": complete, "cells": list(cells)}


class Benchmark:
    """Runs the protocol of the module docstring over ``candidates`` and returns every number as a JSON-ready dict.

    Args:
        candidates: the encoders, in the order they take turns and appear in tables (the first is the baseline of
            the ratio columns).
        settings: see :class:`Settings`.
        clock: ``read() -> (wall_s, cpu_s)``; tests inject a scripted one.
        log: progress lines (to stderr by default).
    """

    def __init__(self, candidates: Sequence[Candidate], settings: Settings, clock=None, log=None):
        labels = [candidate.label for candidate in candidates]
        if not candidates or len(set(labels)) != len(labels):
            raise ValueError(f"need at least one encoder and unique labels, got {labels}")
        self.candidates = list(candidates)
        self.settings = settings
        self.clock = clock or SystemClock()
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))

    def run(self, on_length: Optional[Callable[[dict], None]] = None) -> dict:
        """Measure everything; ``on_length(partial_result)`` is called after each length but the last, so that a
        long run that is stopped still leaves its numbers (``"complete": False``)."""
        settings = self.settings
        torch.set_num_threads(settings.threads)
        machine = {"matmul_size": settings.matmul_size, "matmul_gflops": []}
        header = {
            "schema": SCHEMA,
            "started": _now(),
            "environment": environment(settings),
            "settings": dataclasses.asdict(settings),
            "machine": machine,
        }
        if settings.matmul_size:
            machine["matmul_gflops"].append(measure_matmul_gflops(settings.matmul_size, settings.device))
        models, encoders = {}, []
        for candidate in self.candidates:
            model = candidate.build(settings.feature_dim).to(settings.device)
            set_batch_count(model, settings.batch_count)
            models[candidate.label] = model
            encoders.append({"label": candidate.label, **candidate.info, "params": count_parameters(model)})
            self.log(f"built {candidate.label}: {encoders[-1]['params']:,} parameters")
        probe = None if settings.flops_only else MemoryProbe(settings.device)
        memory_note = probe.note if probe else ""
        if probe and settings.live_memory and settings.device == "cpu":
            if fix_mmap_threshold(LIVE_MEMORY_MMAP_THRESHOLD):
                memory_note = f"live memory: glibc's mmap threshold fixed at {LIVE_MEMORY_MMAP_THRESHOLD} bytes"
            else:
                memory_note = "live memory asked for, but glibc's mallopt is not available: resident-set peaks"
        header.update(memory_note=memory_note, encoders=encoders)
        cells = []
        for index, length_s in enumerate(settings.lengths_s):
            cells.extend(self._length(length_s, models, probe))
            if on_length is not None and index + 1 < len(settings.lengths_s):
                on_length(_result(header, cells, complete=False))
        if settings.matmul_size:
            machine["matmul_gflops"].append(measure_matmul_gflops(settings.matmul_size, settings.device))
        return _result(header, cells, complete=True)

    def _length(self, length_s: float, models: Dict[str, torch.nn.Module], probe: Optional["MemoryProbe"]) -> List[dict]:
        """All cells of one input length: FLOPs of every encoder, then each mode's alternating measurement."""
        settings = self.settings
        frames = settings.frames(length_s)
        generator = torch.Generator().manual_seed(settings.seed)
        xs = torch.randn(settings.batch, frames, settings.feature_dim, generator=generator).to(settings.device)
        ilens = torch.full((settings.batch,), frames, dtype=torch.long, device=settings.device)
        cells: Dict[Tuple[str, str], dict] = {}
        steps: Dict[Tuple[str, str], _Step] = {}
        for label, model in models.items():
            for mode in settings.modes:
                cell = {"encoder": label, "length_s": length_s, "frames": frames, "batch": settings.batch, "mode": mode}
                cell.update(status="ok", note="", runs=[])
                step = _Step(model, mode, xs, ilens, settings.seed, settings.amp)
                step.prepare()
                counted = _guarded(cell, lambda: count_flops(step), settings.device)
                if counted is not None:
                    cell["flops"], cell["output_shape"] = counted[0], list(counted[1].shape)
                    steps[(label, mode)] = step
                cells[(label, mode)] = cell
                self.log(f"{label} @ {length_s:g} s {mode}: {cell.get('flops', 0) / 1e9:.2f} GFLOPs {cell['note']}")
        if not settings.flops_only:
            for mode in settings.modes:
                self._alternate([(cells[key], steps[key]) for key in steps if key[1] == mode], probe)
        return list(cells.values())

    def _alternate(self, pairs: List[Tuple[dict, _Step]], probe: MemoryProbe):
        """Warm-ups, one memory probe each, then timed rounds in which the encoders take turns."""
        settings = self.settings
        device = settings.device

        def live():
            return [(cell, step) for cell, step in pairs if cell["status"] == "ok"]

        for _ in range(settings.warmup):
            for cell, step in live():
                _guarded(cell, lambda: self._attempt(cell, step), device)
        for cell, step in live():
            step.prepare()
            measured = _guarded(cell, lambda: probe.measure(step), device)
            if measured is not None:
                cell["peak_bytes"], cell["memory_before_bytes"], cell["process_peak_bytes"] = measured
        for round_index in range(settings.runs):
            for cell, step in live():
                attempt = _guarded(cell, lambda: self._attempt(cell, step), device)
                if attempt is not None:
                    cell["runs"].append({**attempt, "flagged": False, "attempts": [attempt]})
                    self._log_attempt(cell, f"run {round_index + 1}", attempt)
        for _ in range(settings.max_retries):
            disturbed = [(cell, step, run) for cell, step in live() for run in cell["runs"] if self._flag(cell, run)]
            if not disturbed:
                break
            for cell, step, run in disturbed:
                attempt = _guarded(cell, lambda: self._attempt(cell, step), device)
                if attempt is not None:
                    run["attempts"].append(attempt)
                    self._log_attempt(cell, "repeat of a disturbed run", attempt)
                    if attempt["cpu_ratio"] > run["cpu_ratio"]:
                        run.update(attempt)
        for cell, _ in pairs:
            for run in cell["runs"]:
                run["flagged"] = self._flag(cell, run)

    def _log_attempt(self, cell: dict, what: str, attempt: dict):
        self.log(
            f"{cell['encoder']} @ {cell['length_s']:g} s {cell['mode']} {what}: {attempt['wall_s']:.3f} s, "
            f"cpu/wall {attempt['cpu_ratio']:.2f}"
        )

    def _attempt(self, cell: dict, step: _Step) -> dict:
        """Run ``step`` once under the clock; keep the cell's best CPU/wall ratio up to date."""
        step.prepare()
        wall_start, cpu_start = self.clock.read()
        step()
        wall_end, cpu_end = self.clock.read()
        wall, cpu = wall_end - wall_start, cpu_end - cpu_start
        ratio = cpu / wall if wall > 0 else 0.0
        cell["best_cpu_ratio"] = max(cell.get("best_cpu_ratio", 0.0), ratio)
        return {"wall_s": wall, "cpu_s": cpu, "cpu_ratio": ratio}

    def _flag(self, cell: dict, run: dict) -> bool:
        """Whether a run lost its cores to another process: its CPU/wall ratio is under ``min_cpu_ratio``, a bar
        lowered to 0.8 x the best ratio the cell reached (warm-ups included) for cells too small to keep every
        thread busy even on a quiet machine, but never below 0.8: a compute-bound forward keeps at least one core
        busy, so a run that got less than that was disturbed even if all runs of the cell were."""
        bar = min(self.settings.min_cpu_ratio, max(0.8, 0.8 * cell["best_cpu_ratio"]))
        return run["cpu_ratio"] < bar
