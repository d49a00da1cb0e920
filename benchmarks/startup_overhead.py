"""Interpreter start-up cost of the registration hook (the issue's target: < 5 ms).

Measures, in fresh interpreters of this environment: the hook's own import time (``python -X importtime``, cumulative
microseconds of ``hybrid_encoders``), and the wall time of ``python -c pass`` with the hook and with
``HYBRID_ENCODERS_DISABLE=1`` (median of N alternated runs). Prints a table and writes JSON.

    python benchmarks/startup_overhead.py [--runs 30] [--out startup_overhead.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def import_time_us() -> int:
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, check=True)
    for line in result.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "hybrid_encoders":
            return int(parts[1])
    raise RuntimeError("hybrid_encoders was not imported at start-up: is the package installed in this interpreter?")


def wall_ms(disabled: bool) -> float:
    env = {**os.environ, **({"HYBRID_ENCODERS_DISABLE": "1"} if disabled else {})}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    return (time.perf_counter() - start) * 1000.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", default="startup_overhead.json")
    args = parser.parse_args()
    imports = [import_time_us() for _ in range(args.runs)]
    with_hook, without_hook = [], []
    for _ in range(args.runs):  # alternate, so that machine load hits both alike
        with_hook.append(wall_ms(False))
        without_hook.append(wall_ms(True))
    result = {
        "python": sys.version.split()[0],
        "runs": args.runs,
        "hook_import_ms_median": statistics.median(imports) / 1000.0,
        "python_c_pass_ms_median_with_hook": statistics.median(with_hook),
        "python_c_pass_ms_median_disabled": statistics.median(without_hook),
    }
    result["added_wall_ms"] = result["python_c_pass_ms_median_with_hook"] - result["python_c_pass_ms_median_disabled"]
    for key, value in result.items():
        print(f"{key:40s} {value if not isinstance(value, float) else f'{value:.2f}'}")
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
