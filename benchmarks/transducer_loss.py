"""Full vs pruned RNN-T loss on CPU: forward + backward time and peak memory (issue 7's target: pruned <= 0.2x memory,
and faster).

Both cases include what a training step pays for the loss: the joint network (``tanh(am + lm)`` then a linear layer
to the vocabulary, ESPnet's ``JointNetwork`` with the projections applied first) and the loss, forward and backward.

* ``full``: the joint on all (B, T, U+1) nodes, then ``torchaudio.functional.rnnt_loss`` (through our checks);
* ``pruned``: the simple loss (two vocabulary projections, the smoothed lattice, its occupation), the pruning bounds,
  the joint on (B, T, prune_range) nodes and the pruned loss (our pure-PyTorch implementation).

Each case runs in a fresh interpreter (so one case's allocator state cannot affect the other): one warm-up call, then
``--repeats`` timed calls (median wall time), then one call under the bench harness's ``MemoryProbe`` (growth of the
peak RSS over the RSS just before the call, glibc heap trimmed first). Prints a table and writes JSON.

    python benchmarks/transducer_loss.py [--repeats 3] [--out transducer_loss.json]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

SHAPE = dict(batch=8, frames=500, labels=100, vocab=500, joint_dim=512, prune_range=5)
CASES = ("full", "pruned")


def make_step(case: str):
    """A closure running one forward + backward of ``case`` on fixed random inputs."""
    import torch

    from hybrid_encoders.transducer.pruned_rnnt import prune_joint_inputs, prune_ranges, pruned_rnnt_loss, simple_rnnt_loss
    from hybrid_encoders.transducer.rnnt_loss import rnnt_loss

    torch.manual_seed(0)
    batch, frames, labels, vocab, dim = (SHAPE[k] for k in ("batch", "frames", "labels", "vocab", "joint_dim"))
    am = torch.randn(batch, frames, dim, requires_grad=True)  # projected encoder output
    lm = torch.randn(batch, labels + 1, dim, requires_grad=True)  # projected decoder output
    output = torch.nn.Linear(dim, vocab)
    simple_am, simple_lm = torch.nn.Linear(dim, vocab), torch.nn.Linear(dim, vocab)
    symbols = torch.randint(1, vocab, (batch, labels))
    frame_lengths = torch.full((batch,), frames)
    label_lengths = torch.full((batch,), labels)

    def full():
        logits = output(torch.tanh(am.unsqueeze(2) + lm.unsqueeze(1)))
        rnnt_loss(logits, symbols, frame_lengths, label_lengths).backward()

    def pruned():
        simple, occupation = simple_rnnt_loss(
            simple_lm(lm), simple_am(am), symbols, label_lengths, frame_lengths, return_occupation=True
        )
        ranges = prune_ranges(*occupation, label_lengths, frame_lengths, SHAPE["prune_range"])
        am_pruned, lm_pruned = prune_joint_inputs(am, lm, ranges)
        loss = pruned_rnnt_loss(output(torch.tanh(am_pruned + lm_pruned)), symbols, ranges, label_lengths, frame_lengths)
        (0.5 * simple + loss).backward()

    return {"full": full, "pruned": pruned}[case]


def run_case(case: str, repeats: int) -> dict:
    """Measure ``case`` in this process (the worker side)."""
    from hybrid_encoders.bench.harness import MemoryProbe

    step = make_step(case)
    step()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    growth, before, peak = MemoryProbe("cpu").measure(step)
    return {"case": case, "seconds_median": statistics.median(seconds), "seconds": seconds, "peak_growth_bytes": growth,
            "rss_before_bytes": before, "peak_rss_bytes": peak}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="transducer_loss.json")
    parser.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_case(args.worker, args.repeats)))
        return
    import torch

    results = {}
    for case in CASES:
        worker = subprocess.run(
            [sys.executable, __file__, "--worker", case, "--repeats", str(args.repeats)],
            capture_output=True, text=True, check=True,
        )
        results[case] = json.loads(worker.stdout.strip().splitlines()[-1])
    full, pruned = results["full"], results["pruned"]
    summary = {
        "shape": SHAPE,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "results": results,
        "memory_ratio_pruned_over_full": pruned["peak_growth_bytes"] / full["peak_growth_bytes"],
        "speedup_full_over_pruned": full["seconds_median"] / pruned["seconds_median"],
    }
    shape = ", ".join(f"{key}={value}" for key, value in SHAPE.items())
    print(f"RNN-T loss + joint, forward+backward on CPU ({shape})")
    print(f"{'case':<8} {'median s':>10} {'peak growth MiB':>16}")
    for case in CASES:
        row = results[case]
        print(f"{case:<8} {row['seconds_median']:>10.3f} {row['peak_growth_bytes'] / 2**20:>16.1f}")
    print(f"pruned / full peak memory: {summary['memory_ratio_pruned_over_full']:.3f}; "
          f"full / pruned time: {summary['speedup_full_over_pruned']:.2f}x")
    with open(args.out, "w") as handle:
        json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    main()
