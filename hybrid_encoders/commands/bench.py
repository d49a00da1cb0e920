"""``hybrid-encoders bench``: time, peak memory, FLOPs and parameters of our encoders next to ESPnet's own."""

import argparse
import datetime
import pathlib
import sys

NAME = "bench"
HELP = (
    "Measure inference and training time, peak memory, FLOPs and parameters of encoders (ours and ESPnet's "
    "conformer / e_branchformer at recipe sizes) over input lengths; writes JSON, a Markdown table and plots."
)


def add_arguments(parser: argparse.ArgumentParser):
    from hybrid_encoders.bench.models import DEFAULT_ENCODERS

    parser.add_argument(
        "--encoders",
        nargs="+",
        metavar="NAME[:PRESET]",
        help=f"encoders to compare, in table order (the first is the baseline of the ratio columns); "
        f"default: {' '.join(DEFAULT_ENCODERS)} (those that are registered)",
    )
    parser.add_argument(
        "--lengths",
        nargs="+",
        type=float,
        default=[5.0, 10.0, 30.0, 60.0],
        metavar="SECONDS",
        help="input lengths in seconds of 80-dim features at 100 Hz (default: 5 10 30 60)",
    )
    parser.add_argument("--batch", type=int, default=2, help="sequences per forward (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per cell (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per cell (default: %(default)s)")
    parser.add_argument(
        "--mode",
        choices=("inference", "training", "both"),
        default="both",
        help="inference: eval + no_grad forward; training: forward + backward (default: %(default)s)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="(default: %(default)s)")
    parser.add_argument(
        "--amp",
        choices=("bf16", "fp16"),
        help="run every forward under torch.autocast to this dtype, as ESPnet's --use_amp true does (default: fp32)",
    )
    parser.add_argument(
        "--min-cpu-ratio",
        type=float,
        help="CPU/wall ratio under which a run counts as disturbed and is repeated (default: 0.75 x threads on CPU)",
    )
    parser.add_argument("--max-retries", type=int, default=2, help="repeats of one disturbed run (default: %(default)s)")
    parser.add_argument("--out", type=pathlib.Path, help="output folder (default: bench_results/<date-time>)")
    parser.add_argument("--no-plots", action="store_true", help="write JSON and Markdown only")
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs and parameters only, no timing")
    parser.add_argument(
        "--batch-count",
        type=int,
        default=0,
        help="schedule position (optimizer steps) of encoders with training schedules: Zipformer, ours and icefall's "
        "(default: %(default)s, the first step)",
    )
    parser.add_argument(
        "--live-memory",
        action="store_true",
        help="CPU: fix glibc's mmap threshold at 64 KiB so that peak memory follows the live tensors, as on a GPU, "
        "not what the heap keeps (recommended for training comparisons; costs some time)",
    )
    parser.add_argument(
        "--reference-icefall",
        metavar="PATH",
        help=f"an icefall checkout: also measure icefall's own Zipformer-{REFERENCE_PRESETS['zipformer']} "
        "(egs/librispeech/ASR/zipformer), which our zipformer rows are then compared with",
    )
    parser.add_argument(
        "--reference-nemo",
        metavar="PATH",
        help="a NeMo checkout (with NeMo's ASR dependencies installed): also measure NeMo's own Squeezeformer-"
        f"{REFERENCE_PRESETS['squeezeformer'].upper()}, which our squeezeformer rows are then compared with",
    )


# the size of each reference implementation: the preset of ours it is built like
REFERENCE_PRESETS = {"zipformer": "m", "squeezeformer": "sm"}


def reference_candidates(args: argparse.Namespace, notes: list) -> list:
    """Candidates for ``--reference-icefall`` / ``--reference-nemo`` (built lazily, like ours)."""
    from hybrid_encoders.bench.harness import Candidate
    from hybrid_encoders.bench import reference

    candidates = []
    if args.reference_icefall:
        preset = REFERENCE_PRESETS["zipformer"]
        candidates.append(
            Candidate(
                label=f"icefall:zipformer-{preset}",
                build=lambda _: reference.build_icefall_zipformer(args.reference_icefall, preset, notes),
                info={"name": "icefall_zipformer", "preset": preset, "source": args.reference_icefall,
                      "reference_for": "zipformer"},
            )
        )
    if args.reference_nemo:
        preset = REFERENCE_PRESETS["squeezeformer"]
        candidates.append(
            Candidate(
                label=f"nemo:squeezeformer-{preset}",
                build=lambda _: reference.build_nemo_squeezeformer(args.reference_nemo, preset),
                info={"name": "nemo_squeezeformer", "preset": preset, "source": args.reference_nemo,
                      "reference_for": "squeezeformer", "config": reference.nemo_squeezeformer_config(preset)},
            )
        )
    return candidates


def run(args: argparse.Namespace) -> int:
    from hybrid_encoders.bench.harness import MODES, Benchmark, Candidate, Settings
    from hybrid_encoders.bench.models import build_encoder, parse_encoders
    from hybrid_encoders.bench.report import markdown_table, write_report

    try:
        specs, notes = parse_encoders(args.encoders)
        settings = Settings(
            lengths_s=args.lengths,
            batch=args.batch,
            threads=args.threads,
            runs=args.runs,
            warmup=args.warmup,
            modes=MODES if args.mode == "both" else (args.mode,),
            device=args.device,
            min_cpu_ratio=args.min_cpu_ratio,
            max_retries=args.max_retries,
            flops_only=args.flops_only,
            batch_count=args.batch_count,
            live_memory=args.live_memory,
            amp=args.amp,
        )
    except ValueError as error:
        print(f"hybrid-encoders bench: error: {error}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"hybrid-encoders bench: {note}", file=sys.stderr)
    if not specs:
        print("hybrid-encoders bench: error: no encoder can be built here", file=sys.stderr)
        return 2
    candidates = [
        Candidate(
            label=spec.label,
            build=lambda input_size, spec=spec: build_encoder(spec, input_size),
            info={"name": spec.name, "preset": spec.preset, "source": spec.source, "config": spec.config()},
        )
        for spec in specs
    ]
    references = reference_candidates(args, notes)
    for candidate in candidates:  # ours are compared with the reference implementation of their family
        for reference_candidate in references:
            if candidate.info["name"] == reference_candidate.info["reference_for"]:
                candidate.info["compare_with"] = reference_candidate.label
    candidates += references
    out = args.out or pathlib.Path("bench_results") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")

    def write(result: dict, plots: bool):
        return write_report({**result, "notes": notes}, out, plots=plots)

    try:
        result = Benchmark(candidates, settings).run(on_length=lambda partial: write(partial, plots=False))
    except ValueError as error:  # a bad --encoders override or --reference-* checkout, found when building
        print(f"hybrid-encoders bench: error: {error}", file=sys.stderr)
        return 2
    written = write(result, plots=not args.no_plots)
    print(markdown_table(result))
    print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    return 0
