"""Streaming Zipformer on CPU: time per chunk, real-time factor, latency, and memory over 1, 10 and 60 minutes.

Issue 14's targets (Zipformer-M causal, 320 ms chunks = 16 embed frames, one thread, this 2-core CPU): real-time
factor <= 0.1 and peak memory growth from 1 to 60 minutes of audio <= 5 %.

Per chunk size, one fresh interpreter builds the encoder (random weights; the cost does not depend on them), then
streams one utterance of random 80-dim features for the longest duration asked, one chunk's worth of feature frames
per ``forward_streaming`` call (2C frames, the first call 2C + 13: what a live decoder feeds), from a fixed pool of
pre-generated pieces so that making the input costs nothing. Every call is timed (wall and process CPU time); at each
duration mark the peak resident set (``VmHWM``) is read.

* time per chunk: median and 90th percentile CPU time of a call (each call encodes exactly one chunk);
* real-time factor: total CPU time / audio duration (and the same with wall time);
* algorithmic latency: chunk + right context (13 feature frames the embed reads beyond the chunk), at 10 ms a frame;
  a front end adds its analysis window;
* memory: peak RSS at 1, 10, 60 minutes, and the growth of the peak from the first mark to the last.

``--runtime onnx`` / ``onnx-int8`` time the same encoder exported as a chunk graph (``export onnx --streaming``,
the graph sherpa-onnx runs; int8: onnxruntime's dynamic quantisation of its MatMuls) in onnxruntime with the given
threads, fed ``T = 2C + 13`` feature frames per call as sherpa-onnx feeds it. The export runs in the worker before
the timing, so these rows' peak RSS includes the exporter's; their growth is measured the same way.

    python benchmarks/streaming.py [--preset m] [--chunk-sizes 16,32,64] [--left-context-frames 128] \
        [--minutes 1,10,60] [--threads 1] [--runtime pytorch|onnx|onnx-int8] [--out streaming.json]
    python benchmarks/streaming.py --tiny --minutes 0.2,0.5   # a quick check of the script itself
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

FRAME_SHIFT_MS = 10.0
TARGETS = {"chunk_size": 16, "preset": "m", "rtf": 0.1, "memory_growth": 0.05}
TINY = {  # two small stacks: checks the script, measures nothing of interest
    "num_encoder_layers": [1, 1],
    "downsampling_factor": [1, 2],
    "encoder_dim": [32, 48],
    "encoder_unmasked_dim": [32, 32],
    "feedforward_dim": [64, 96],
    "num_heads": [2, 2],
    "cnn_module_kernel": [7, 5],
}


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("/proc/self/status has no VmHWM")


def run_chunk_size(args) -> dict:
    """Stream ``max(minutes)`` of audio at one chunk size in this process (the worker side)."""
    import torch

    from hybrid_encoders.encoders.zipformer import ZipformerEncoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    conf = TINY if args.tiny else {"preset": args.preset}
    streaming = {"causal": True, "chunk_size": [args.worker], "left_context_frames": [args.left_context_frames]}
    encoder = ZipformerEncoder(80, **streaming, **conf).eval()
    geometry = encoder.streaming_geometry()
    if args.runtime == "pytorch":
        stride = geometry.features_per_chunk
        first = torch.randn(1, geometry.features_needed(1), 80)

        def encode(piece, states):
            _, olens, states = encoder.forward_streaming(piece, torch.tensor([piece.size(1)]), states)
            return int(olens[0]), states

    else:
        stride = geometry.features_needed(1)  # each call reads its chunk and the right context
        first = None
        encode = _onnx_chunk_encoder(encoder, args.runtime, args.threads)
    pool = [torch.randn(1, stride, 80) for _ in range(64)]
    marks = sorted(args.minutes)
    total_chunks = int(round(marks[-1] * 60_000 / geometry.chunk_ms(FRAME_SHIFT_MS)))
    mark_chunks = {int(round(minutes * 60_000 / geometry.chunk_ms(FRAME_SHIFT_MS))): minutes for minutes in marks}

    states, cpu, wall, memory = None, [], [], {}
    for chunk in range(1, total_chunks + 1):
        piece = first if chunk == 1 and first is not None else pool[chunk % len(pool)]
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        frames, states = encode(piece, states)
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
        if frames != geometry.output_frames_per_chunk:
            raise RuntimeError(f"chunk {chunk} gave {frames} frames, not {geometry.output_frames_per_chunk}")
        if chunk in mark_chunks:
            memory[str(mark_chunks[chunk])] = _peak_rss_bytes()
    audio_s = total_chunks * geometry.chunk_ms(FRAME_SHIFT_MS) / 1000
    first_mark, last_mark = memory[str(marks[0])], memory[str(marks[-1])]
    return {
        "chunk_size": args.worker,
        "left_context_frames": geometry.left_context_frames,
        "chunk_ms": geometry.chunk_ms(FRAME_SHIFT_MS),
        "right_context_ms": geometry.right_context_ms(FRAME_SHIFT_MS),
        "algorithmic_latency_ms": geometry.algorithmic_latency_ms(FRAME_SHIFT_MS),
        "chunks": total_chunks,
        "audio_s": audio_s,
        "cpu_ms_per_chunk_median": 1000 * statistics.median(cpu),
        "cpu_ms_per_chunk_p90": 1000 * statistics.quantiles(cpu, n=10)[-1] if len(cpu) > 1 else 1000 * cpu[0],
        "wall_ms_per_chunk_median": 1000 * statistics.median(wall),
        "rtf_cpu": sum(cpu) / audio_s,
        "rtf_wall": sum(wall) / audio_s,
        "peak_rss_bytes": memory,
        "memory_growth": (last_mark - first_mark) / first_mark,
        "memory_growth_bytes": last_mark - first_mark,
        "parameters": sum(p.numel() for p in encoder.parameters()),
    }


def _onnx_chunk_encoder(encoder, runtime: str, threads: int):
    """Export ``encoder`` as a chunk graph (identity normalisation and head), optionally int8, and return
    ``encode(piece (1, T, 80), states) -> (output frames, states)`` running it in onnxruntime."""
    import pathlib
    import shutil
    import tempfile

    import onnxruntime
    import torch

    from hybrid_encoders.deploy.graphs import FeatureNormalization
    from hybrid_encoders.deploy.onnx_export import DEFAULT_OPSET, export_graph, quantize_int8, streaming_graph_spec
    from hybrid_encoders.deploy.streaming_graphs import StreamingChunkGraph

    folder = pathlib.Path(tempfile.mkdtemp(prefix="streaming_bench_"))
    graph = StreamingChunkGraph(FeatureNormalization(None, None), encoder, torch.nn.Identity())
    spec = streaming_graph_spec("encoder", graph, "encoder_out", {})
    path = folder / "encoder.onnx"
    export_graph(spec, path, DEFAULT_OPSET)
    if runtime == "onnx-int8":
        quantize_int8(path, folder / "encoder.int8.onnx")
        path = folder / "encoder.int8.onnx"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    shutil.rmtree(folder)
    initial = [state.numpy() for state in graph.initial_states(1)]

    def encode(piece, states):
        output, *states = session.run(None, dict(zip(spec.input_names, [piece.numpy(), *(states or initial)])))
        return output.shape[1], states

    return encode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="m", choices=("s", "m", "l"))
    parser.add_argument("--tiny", action="store_true", help="a tiny two-stack model instead of a preset")
    parser.add_argument("--chunk-sizes", default="16,32,64", help="embed frames (20 ms each) per chunk")
    parser.add_argument("--left-context-frames", type=int, default=128)
    parser.add_argument("--minutes", default="1,10,60", help="durations at which peak memory is read")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runtime", default="pytorch", choices=("pytorch", "onnx", "onnx-int8"))
    parser.add_argument("--out", default="streaming.json")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.minutes = [float(value) for value in args.minutes.split(",")]
    if args.worker:
        print(json.dumps(run_chunk_size(args)))
        return
    import torch

    from hybrid_encoders.bench.harness import Settings, environment

    torch.set_num_threads(args.threads)  # as in the workers: environment() records it
    rows = []
    for chunk_size in (int(value) for value in args.chunk_sizes.split(",")):
        command = [sys.executable, __file__, "--worker", str(chunk_size), "--threads", str(args.threads),
                   "--left-context-frames", str(args.left_context_frames), "--minutes",
                   ",".join(str(m) for m in args.minutes), "--preset", args.preset, "--runtime", args.runtime]
        command += ["--tiny"] if args.tiny else []
        worker = subprocess.run(command, capture_output=True, text=True)
        if worker.returncode != 0:
            sys.exit(f"chunk size {chunk_size} failed:\n{worker.stderr[-3000:]}")
        rows.append(json.loads(worker.stdout.strip().splitlines()[-1]))

    model = "tiny" if args.tiny else f"Zipformer-{args.preset.upper()}"
    print(f"{model} causal ({args.runtime}), streaming one utterance on CPU, {args.threads} thread(s), left context "
          f"{args.left_context_frames} frames; memory = peak RSS at {', '.join(f'{m:g}' for m in args.minutes)} min")
    print(f"{'chunk':>8} {'latency':>9} {'CPU ms/chunk':>13} {'p90':>7} {'RTF cpu':>8} {'RTF wall':>9} "
          f"{'peak RSS MiB':>24} {'growth':>7} {'MiB':>5}")
    for row in rows:
        peaks = " / ".join(f"{row['peak_rss_bytes'][str(m)] / 2**20:.0f}" for m in args.minutes)
        print(f"{row['chunk_ms']:>6.0f}ms {row['algorithmic_latency_ms']:>7.0f}ms "
              f"{row['cpu_ms_per_chunk_median']:>13.1f} "
              f"{row['cpu_ms_per_chunk_p90']:>7.1f} {row['rtf_cpu']:>8.3f} {row['rtf_wall']:>9.3f} {peaks:>24} "
              f"{100 * row['memory_growth']:>6.1f}% {row['memory_growth_bytes'] / 2**20:>5.1f}")
    verdicts = {}
    target_row = next((row for row in rows if row["chunk_size"] == TARGETS["chunk_size"]), None)
    if target_row is not None and not args.tiny and args.preset == TARGETS["preset"]:
        verdicts = {
            "rtf_cpu <= 0.1": target_row["rtf_cpu"] <= TARGETS["rtf"],
            f"memory growth {args.minutes[0]:g} -> {args.minutes[-1]:g} min <= 5 %": target_row["memory_growth"]
            <= TARGETS["memory_growth"],
        }
        for name, passed in verdicts.items():
            print(f"target {name} at 320 ms chunks: {'PASS' if passed else 'FAIL'}")
    result = {
        "schema": "hybrid-encoders-streaming-bench/1",
        "model": model,
        "environment": environment(Settings(threads=args.threads, batch=1, lengths_s=[60.0 * max(args.minutes)])),
        "settings": {
            "chunk_sizes": [row["chunk_size"] for row in rows],
            "left_context_frames": args.left_context_frames,
            "minutes": args.minutes,
            "threads": args.threads,
            "runtime": args.runtime,
        },
        "rows": rows,
        "targets": TARGETS,
        "verdicts": verdicts,
    }
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
