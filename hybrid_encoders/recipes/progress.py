"""Condensed console progress for an ESPnet training run, with an ETA.

``asr_train`` logs everything (model summary, sampler details, per-interval statistics) to stderr. The recipe
writes that full log to ``train.log`` and pipes it through this filter, which prints one line per logged interval::

    [train] epoch 3/12  batch 120/224  loss 31.42  acc 0.812  elapsed 4m05s  ETA 12m30s

plus each epoch's validation result, and every warning or error line as it is. The ETA assumes every remaining
training batch costs the mean time of those done so far (validation and checkpointing are included in that mean
from the second epoch on).

Usage: ``python -m espnet2.bin.asr_train ... 2>&1 | tee train.log | python -m hybrid_encoders.recipes.progress``
"""

import re
import sys
import time
from typing import IO, Optional

_MAX_EPOCH = re.compile(r"(\d+)/(\d+)epoch started")
_N_BATCH = re.compile(r"\[train\] mini-batch sizes summary: N-batch=(\d+)")
_INTERVAL = re.compile(r"(\d+)epoch:train:(\d+)-(\d+)batch: (.*)$")
_RESULTS = re.compile(r"(\d+)epoch results: (.*)$")
_METRIC = re.compile(r"\b(loss|acc)=([-+0-9.eE]+)")
_ALERT = re.compile(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b|Error:")


def format_duration(seconds: float) -> str:
    """``"1h02m"``, ``"12m30s"`` or ``"45s"``."""
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class TrainingProgress:
    """State machine over ESPnet log lines; :meth:`feed` returns the line to print, or ``None``.

    Args:
        clock: returns seconds (injectable for tests); defaults to :func:`time.perf_counter`.
    """

    def __init__(self, clock=time.perf_counter) -> None:
        self.clock = clock
        self.start: Optional[float] = None
        self.max_epoch = 0
        self.batches_per_epoch = 0
        self.first_epoch = 0

    def feed(self, line: str) -> Optional[str]:
        """Consume one log line."""
        line = line.rstrip("\n")
        match = _N_BATCH.search(line)
        if match:
            self.batches_per_epoch = int(match.group(1))
            return None
        match = _MAX_EPOCH.search(line)
        if match:
            epoch, self.max_epoch = int(match.group(1)), int(match.group(2))
            if self.start is None:
                self.start, self.first_epoch = self.clock(), epoch
            return f"[train] epoch {epoch}/{self.max_epoch} started"
        match = _INTERVAL.search(line)
        if match:
            return self._interval(int(match.group(1)), int(match.group(3)), match.group(4))
        match = _RESULTS.search(line)
        if match:
            valid = match.group(2).partition("[valid]")[2]
            metrics = "  ".join(f"{k} {float(v):.3f}" for k, v in _METRIC.findall(valid))
            return f"[valid] epoch {match.group(1)}/{self.max_epoch}  {metrics}"
        if _ALERT.search(line):
            return line
        return None

    def _interval(self, epoch: int, batch: int, body: str) -> str:
        metrics = "  ".join(f"{k} {float(v):.3f}" for k, v in _METRIC.findall(body))
        total = f"/{self.batches_per_epoch}" if self.batches_per_epoch else ""
        text = f"[train] epoch {epoch}/{self.max_epoch}  batch {batch}{total}  {metrics}"
        if self.start is None or not self.batches_per_epoch:
            return text
        elapsed = self.clock() - self.start
        done = (epoch - self.first_epoch) * self.batches_per_epoch + batch
        remaining = (self.max_epoch - epoch) * self.batches_per_epoch + max(self.batches_per_epoch - batch, 0)
        return f"{text}  elapsed {format_duration(elapsed)}  ETA {format_duration(elapsed / done * remaining)}"


def follow(stream: IO[str], output: IO[str]) -> None:
    """Filter ``stream`` line by line into ``output`` (flushed after every line)."""
    progress = TrainingProgress()
    for line in stream:
        message = progress.feed(line)
        if message is not None:
            output.write(message + "\n")
            output.flush()


if __name__ == "__main__":
    follow(sys.stdin, sys.stdout)
