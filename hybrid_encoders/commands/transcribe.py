"""``hybrid-encoders transcribe``: audio files to text with a trained ESPnet experiment, offline or streaming.

    hybrid-encoders transcribe --config exp/asr/config.yaml --model exp/asr/valid.loss.ave.pth a.wav b.wav
    hybrid-encoders transcribe --streaming --realtime --config C --model M a.wav
    hybrid-encoders transcribe --onnx exp/onnx [--int8] a.wav b.wav

With ``--onnx DIR`` (a folder of ``hybrid-encoders export onnx``) onnxruntime runs the exported graphs with the
greedy searches of :mod:`hybrid_encoders.deploy.runtime`; each file is decoded alone, as in the offline mode.

Offline, each file goes whole through the model's ``encode`` (a causal encoder runs its chunked forward with the
decode chunk setting; ``--chunk_size -1`` gives it full context) and the search reads all frames. With
``--streaming`` the audio is read in ``--piece_ms`` pieces and fed to :class:`hybrid_encoders.streaming.Recognizer`
(causal models only); the partial result is shown as it changes, on standard error (one line rewritten in place on
a terminal, a line per change otherwise), at real-time pace with ``--realtime``. The final text of each file goes to
standard output, one line per file.

The searches are those of :mod:`hybrid_encoders.streaming.decoding` (CTC or transducer, greedy or beam; a hybrid
CTC/attention model uses its CTC branch; no language model).
"""

import argparse
import sys
import time
from typing import Callable

import torch

NAME = "transcribe"
HELP = "transcribe audio files with a trained ESPnet model, offline or streaming (partial results as audio is read)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hybrid_encoders.streaming.decoding import METHODS

    parser.add_argument("audio", nargs="+", help="audio files (any format soundfile reads), mono, at the model's rate")
    parser.add_argument("--config", help="the training config.yaml of the ESPnet experiment")
    parser.add_argument("--model", help="its model file (e.g. valid.acc.ave.pth)")
    parser.add_argument("--streaming", action="store_true", help="decode chunk by chunk (causal encoders)")
    parser.add_argument("--realtime", action="store_true", help="with --streaming: feed the audio at real-time pace")
    parser.add_argument("--piece_ms", type=float, default=100.0, help="with --streaming: audio per piece (ms)")
    parser.add_argument(
        "--decoding_method", choices=METHODS, default=None,
        help="default: rnnt_greedy for a transducer, else ctc_greedy",
    )
    parser.add_argument("--beam_size", type=int, default=4, help="hypotheses kept by the beam searches")
    parser.add_argument("--chunk_size", type=int, default=None, help="encoder chunk (50 Hz frames; 16 = 320 ms)")
    parser.add_argument("--left_context_frames", type=int, default=None, help="encoder left context (50 Hz frames)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--onnx", help="decode with onnxruntime from this export folder (instead of --config/--model)")
    parser.add_argument("--int8", action="store_true", help="with --onnx: the int8 graphs (export --quantize int8)")


def read_audio(path: str, sample_rate: int) -> torch.Tensor:
    """(N,) float32 waveform of a mono file at ``sample_rate``; ValueError naming the file otherwise."""
    import soundfile

    try:
        array, rate = soundfile.read(path, dtype="float32")
    except (RuntimeError, OSError) as error:  # soundfile raises LibsndfileError (a RuntimeError) for bad files
        raise ValueError(f"{path}: cannot read audio ({error})") from error
    if rate != sample_rate:
        raise ValueError(f"{path}: audio at {rate} Hz, but the model's front end expects {sample_rate} Hz")
    if array.ndim != 1:
        raise ValueError(f"{path}: {array.shape[1]}-channel audio; the model takes mono audio")
    return torch.from_numpy(array)


def partial_printer(stream=None) -> Callable[[str, bool], None]:
    """show(text, done): a live line on a terminal, else a line whenever the text changes (standard error)."""
    stream = stream or sys.stderr
    last = [None]

    def show(text: str, done: bool = False) -> None:
        if stream.isatty():
            stream.write("\r\033[K" + text + ("\n" if done else ""))
            stream.flush()
        elif text != last[0] and not done:
            stream.write(f"partial: {text}\n")
            stream.flush()
        last[0] = text

    return show


def transcribe_streaming(args: argparse.Namespace) -> None:
    from hybrid_encoders.streaming.recognizer import Recognizer

    recognizer = Recognizer.from_config(
        args.config, args.model, device=args.device, decoding_method=args.decoding_method, beam_size=args.beam_size,
        chunk_size=args.chunk_size, left_context_frames=args.left_context_frames,
    )
    piece = max(1, int(round(recognizer.sample_rate * args.piece_ms / 1000)))
    for path in args.audio:
        wave = read_audio(path, recognizer.sample_rate)
        show = partial_printer()
        start = time.perf_counter()
        for position in range(0, wave.numel(), piece):
            show(recognizer.accept_waveform(wave[position : position + piece]))
            if args.realtime:  # wait until the audio fed so far would have been spoken
                time.sleep(max(0.0, start + (position + piece) / recognizer.sample_rate - time.perf_counter()))
        text = recognizer.finalize()
        show(text, done=True)
        print(text, flush=True)
        recognizer.reset()


def transcribe_offline(args: argparse.Namespace) -> None:
    from hybrid_encoders.streaming.frontend import streaming_features
    from hybrid_encoders.streaming.recognizer import (
        TokenText,
        choose_method,
        configure_streaming,
        decode_utterance,
        load_model,
    )

    model, train_args = load_model(args.config, args.model, args.device)
    if args.chunk_size is not None or args.left_context_frames is not None:
        configure_streaming(model, args.chunk_size, args.left_context_frames, simulate=True)
    method = choose_method(model, args.decoding_method, args.beam_size)
    token_text = TokenText.for_model(model, train_args)
    sample_rate = streaming_features(model).sample_rate
    for path in args.audio:
        hypothesis = decode_utterance(model, method, args.beam_size, read_audio(path, sample_rate))[0]
        tokens, text = token_text(hypothesis.tokens)
        print(text if text is not None else " ".join(tokens), flush=True)


def transcribe_onnx(args: argparse.Namespace) -> None:
    from hybrid_encoders.deploy import ExportError, MissingDependencyError, OnnxAsrModel

    methods = {None: None, "ctc_greedy": "ctc", "rnnt_greedy": "transducer"}
    if args.decoding_method not in methods:
        raise ValueError("--onnx decodes greedily: --decoding_method must be ctc_greedy or rnnt_greedy")
    try:
        model = OnnxAsrModel(args.onnx, int8=args.int8, decoding=methods[args.decoding_method])
        for path in args.audio:
            waveform = read_audio(path, model.feature_extractor.sample_rate).numpy()
            print(model.transcribe([waveform])[0], flush=True)
    except (ExportError, MissingDependencyError) as error:
        raise ValueError(str(error)) from error


def run(args: argparse.Namespace) -> int:
    try:
        if args.onnx is not None:
            if args.config is not None or args.model is not None or args.streaming:
                raise ValueError("--onnx runs an export folder: it takes no --config, --model or --streaming")
            transcribe_onnx(args)
            return 0
        if args.int8:
            raise ValueError("--int8 needs --onnx")
        if args.config is None or args.model is None:
            raise ValueError("--config and --model are required (the experiment's config.yaml and model file)")
        if args.realtime and not args.streaming:
            raise ValueError("--realtime needs --streaming")
        if not args.piece_ms > 0:
            raise ValueError(f"--piece_ms must be > 0, got {args.piece_ms}")
        (transcribe_streaming if args.streaming else transcribe_offline)(args)
    except ValueError as error:
        print(f"hybrid-encoders transcribe: error: {error}", file=sys.stderr)
        return 2
    return 0
