"""``hybrid-encoders export onnx``: a trained ESPnet experiment -> ONNX graphs for onnxruntime and sherpa-onnx.

    hybrid-encoders export onnx --config exp/asr_x/config.yaml --model exp/asr_x/valid.acc.ave.pth --out exp/onnx \
        [--quantize int8] [--opset 18] [--streaming [--chunk-size 16 --left-context-frames 128]]

See :mod:`hybrid_encoders.deploy.onnx_export` for the folder's contents and docs/deployment.md for running it.
"""

import argparse
import logging
import pathlib
import sys

NAME = "export"
HELP = "export a trained ESPnet model to ONNX (onnxruntime, sherpa-onnx), optionally with int8 weights"
FORMATS = ("onnx",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hybrid_encoders.deploy.onnx_export import DEFAULT_OPSET, QUANTIZATIONS

    parser.add_argument("format", choices=FORMATS, help="what to export to")
    parser.add_argument("--config", required=True, type=pathlib.Path, help="config.yaml written by asr_train")
    parser.add_argument("--model", required=True, type=pathlib.Path, help="model file written by asr_train")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output folder (must not exist, or be empty)")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default=None, help="also write int8-weight graphs")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument(
        "--atol", type=float, default=1e-4, help="largest allowed |onnxruntime - PyTorch| in the self-check"
    )
    parser.add_argument(
        "--streaming", action="store_true",
        help="causal Zipformers: chunk graphs with cached states (sherpa-onnx OnlineRecognizer)",
    )  # fmt: skip
    parser.add_argument(
        "--chunk-size", type=int, default=None,
        help="with --streaming: embed (50 Hz) frames per chunk, 16 = 320 ms (default: the model's decode setting)",
    )  # fmt: skip
    parser.add_argument(
        "--left-context-frames", type=int, default=None,
        help="with --streaming: embed frames of left context (default: the model's decode setting)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from hybrid_encoders.deploy import ExportError, MissingDependencyError, export_onnx

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = export_onnx(
            args.config, args.model, args.out, args.quantize, args.opset, args.atol, streaming=args.streaming,
            chunk_size=args.chunk_size, left_context_frames=args.left_context_frames,
        )  # fmt: skip
    except (ExportError, MissingDependencyError) as error:
        print(f"hybrid-encoders export: error: {error}", file=sys.stderr)
        return 2
    print(report)
    return 0
