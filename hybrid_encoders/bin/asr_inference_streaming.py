"""Streaming decoding of an ESPnet ASR model with a causal encoder, in ``espnet2.bin.asr_inference``'s layout.

    python -m hybrid_encoders.bin.asr_inference_streaming \\
        --asr_train_config exp/asr/config.yaml --asr_model_file exp/asr/valid.loss.ave.pth \\
        --data_path_and_name_and_type data/test/wav.scp,speech,sound --key_file keys.1.scp \\
        --output_dir exp/asr/decode/test/output.1 --batch_size 8 --ngpu 0 \\
        --decoding_method ctc_prefix_beam --beam_size 4 --chunk_size 16 --left_context_frames 128

writes ``OUTPUT_DIR/1best_recog/{text,token,token_int,score}`` (and ``Nbest_recog`` up to ``--nbest``) like
``asr_inference``, so an ``asr.sh``-style decode-and-score runs by swapping the module (``--config`` takes a YAML
of these options, as there).

Each utterance's audio goes through the model piece by piece (``--piece_ms``): streaming features, the encoder's
``forward_streaming`` chunk by chunk with cached state, and a search that advances with every chunk
(:mod:`hybrid_encoders.streaming`). ``--batch_size`` utterances stream together, each finishing when its audio ends.
``--simulate true`` instead runs each whole utterance through the model's ``encode`` (front end, and the
encoder's chunked ``forward`` with the same chunk size and left context) and the same search over all its frames:
the reference that chunk-by-chunk decoding must reproduce, and the only mode for ``--chunk_size -1`` (full context).

A hybrid CTC/attention model decodes with its CTC branch only; no language model is fused.
"""

import argparse
import logging
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from hybrid_encoders.streaming.decoding import METHODS, Hypothesis
from hybrid_encoders.streaming.frontend import TooShortAudioError, streaming_features
from hybrid_encoders.streaming.recognizer import (
    StreamingDecoder,
    TokenText,
    choose_method,
    configure_streaming,
    decode_utterance,
    load_model,
)


def get_parser() -> argparse.ArgumentParser:
    from espnet2.utils import config_argparse
    from espnet2.utils.types import str2bool, str2triple_str, str_or_none

    parser = config_argparse.ArgumentParser(
        description="Streaming ASR decoding (chunk by chunk) with a causal encoder, asr_inference's output layout",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--log_level", type=lambda x: x.upper(), default="INFO",
        choices=("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET"),
    )
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--ngpu", type=int, default=0, help="0: CPU, 1: the first GPU")
    parser.add_argument("--seed", type=int, default=0, help="random seed (the searches are deterministic)")
    parser.add_argument("--dtype", default="float32", choices=["float32"], help="computation type")

    group = parser.add_argument_group("Input data")
    group.add_argument(
        "--data_path_and_name_and_type", type=str2triple_str, required=True, action="append",
        help="PATH,speech,sound: a wav.scp of the audio (other entries are ignored)",
    )
    group.add_argument("--key_file", type=str_or_none, help="decode only these utterances (first column)")

    group = parser.add_argument_group("Model")
    group.add_argument("--asr_train_config", type=str, required=True, help="the training config.yaml")
    group.add_argument("--asr_model_file", type=str, required=True, help="the model file")
    group.add_argument("--token_type", type=str_or_none, default=None, help="default: the training config's")
    group.add_argument("--bpemodel", type=str_or_none, default=None, help="default: the training config's")
    group.add_argument(
        "--lm_train_config", type=str_or_none, default=None, help="not supported: streaming search fuses no LM"
    )
    group.add_argument("--lm_file", type=str_or_none, default=None, help="not supported: streaming search fuses no LM")

    group = parser.add_argument_group("Search")
    group.add_argument(
        "--decoding_method", type=str_or_none, default=None, choices=[None, *METHODS],
        help="default: rnnt_greedy for a transducer, else ctc_greedy",
    )
    group.add_argument("--beam_size", type=int, default=4, help="hypotheses kept by the beam searches")
    group.add_argument("--nbest", type=int, default=1, help="hypotheses written (1best_recog .. Nbest_recog)")
    group.add_argument("--batch_size", type=int, default=1, help="utterances streamed together")

    group = parser.add_argument_group("Streaming")
    group.add_argument(
        "--chunk_size", type=int, default=None,
        help="encoder chunk in 50 Hz frames after the embed (16 = 320 ms; -1 = full context, --simulate only); "
        "default: the model's decode setting",
    )
    group.add_argument(
        "--left_context_frames", type=int, default=None,
        help="left context in 50 Hz frames (-1 = unlimited, --simulate only); default: the model's decode setting",
    )
    group.add_argument("--piece_ms", type=float, default=100.0, help="audio fed per call, in milliseconds")
    group.add_argument(
        "--simulate", type=str2bool, default=False,
        help="whole utterances through the encoder's chunked forward instead of chunk by chunk",
    )
    return parser


def read_audio(
    entries: Sequence[Tuple[str, str, str]], key_file: Optional[str]
) -> Iterator[Tuple[str, int, np.ndarray]]:
    """(key, sample rate, float32 waveform) of each utterance of the ``speech`` wav.scp, in key-file order.

    Raises:
        ValueError: no ``speech`` entry, one of another type than ``sound``, a key missing from the wav.scp.
    """
    from espnet2.fileio.sound_scp import SoundScpReader

    speech = [entry for entry in entries if entry[1] == "speech"]
    if len(speech) != 1 or speech[0][2] != "sound":
        raise ValueError(
            "--data_path_and_name_and_type: need exactly one PATH,speech,sound entry (a wav.scp), got "
            f"{[','.join(entry) for entry in entries]}"
        )
    reader = SoundScpReader(speech[0][0], dtype="float32", always_2d=False)
    if key_file is None:
        keys = list(reader.keys())
    else:
        with open(key_file, encoding="utf-8") as stream:
            keys = [line.split(maxsplit=1)[0] for line in stream if line.strip()]
    for key in keys:
        if key not in reader.data:
            raise ValueError(f"--key_file {key_file}: utterance {key} is not in {speech[0][0]}")
        rate, array = reader[key]
        yield key, rate, array


def check_waveform(key: str, rate: int, array: np.ndarray, sample_rate: int) -> torch.Tensor:
    """The waveform as a tensor, or a ValueError naming the utterance (wrong rate, several channels)."""
    if rate != sample_rate:
        raise ValueError(f"utterance {key}: audio at {rate} Hz, but the model's front end expects {sample_rate} Hz")
    if array.ndim != 1:
        raise ValueError(f"utterance {key}: {array.shape[1]}-channel audio; the model takes mono audio")
    return torch.from_numpy(array)


def decode_streaming(
    model: torch.nn.Module, method: str, beam_size: int, waves: List[torch.Tensor], nbest: int, piece: int
) -> List[List[Hypothesis]]:
    """Utterances streamed together in pieces of ``piece`` samples, each ending with its last piece."""
    decoder = StreamingDecoder(model, method, len(waves), beam_size)
    start = 0
    while not all(decoder.ended):
        pieces = [None if ended else wave[start : start + piece] for wave, ended in zip(waves, decoder.ended)]
        final = [not ended and start + piece >= wave.numel() for wave, ended in zip(waves, decoder.ended)]
        decoder.accept(pieces, final)
        start += piece
    return decoder.nbest(nbest)


def _too_short_errors() -> tuple:
    """The exceptions of an utterance too short for the front end or the encoder (ESPnet's own moved once)."""
    try:
        from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError
    except ImportError:
        from espnet2.legacy.nets.pytorch_backend.transformer.subsampling import TooShortUttError
    return TooShortAudioError, TooShortUttError


def decode_batch(
    args: argparse.Namespace, model: torch.nn.Module, method: str, batch: List[Tuple[str, torch.Tensor]], piece: int
) -> Dict[str, List[Hypothesis]]:
    """Hypotheses per key; an utterance too short for the model gets an empty one (with a warning), as
    ``asr_inference`` does."""
    too_short = _too_short_errors()
    if not args.simulate and len(batch) > 1:
        try:
            results = decode_streaming(model, method, args.beam_size, [wave for _, wave in batch], args.nbest, piece)
            return {key: hyps for (key, _), hyps in zip(batch, results)}
        except too_short:  # decode the batch's utterances alone to tell which
            logging.info("an utterance of the batch is too short; decoding them one by one")
    results = {}
    for key, wave in batch:
        try:
            if args.simulate:
                results[key] = decode_utterance(model, method, args.beam_size, wave, args.nbest)
            else:
                results[key] = decode_streaming(model, method, args.beam_size, [wave], args.nbest, piece)[0]
        except too_short as error:
            logging.warning(f"utterance {key}: {error}; writing an empty hypothesis")
            results[key] = [Hypothesis((), 0.0)] * args.nbest
    return results


def inference(args: argparse.Namespace) -> None:
    from espnet2.fileio.datadir_writer import DatadirWriter

    if args.lm_train_config is not None or args.lm_file is not None:
        raise ValueError("--lm_train_config / --lm_file: streaming search fuses no language model; leave them out")
    for name in ("batch_size", "beam_size", "nbest"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.ngpu > 1:
        raise ValueError("--ngpu: only 0 (CPU) or 1 GPU is supported")
    if not args.piece_ms > 0:
        raise ValueError(f"--piece_ms must be > 0, got {args.piece_ms}")
    torch.manual_seed(args.seed)
    device = "cuda" if args.ngpu >= 1 else "cpu"
    model, train_args = load_model(args.asr_train_config, args.asr_model_file, device)
    chunk_size, left_context = configure_streaming(model, args.chunk_size, args.left_context_frames, args.simulate)
    method = choose_method(model, args.decoding_method, args.beam_size)  # fails before any audio is read
    if args.nbest > 1 and method not in ("ctc_prefix_beam", "modified_beam_search"):
        raise ValueError(f"--nbest {args.nbest} needs a beam search, not {method}")
    token_text = TokenText.for_model(model, train_args, args.token_type, args.bpemodel)
    sample_rate = streaming_features(model).sample_rate
    piece = max(1, int(round(sample_rate * args.piece_ms / 1000)))
    logging.info(
        f"{'simulated' if args.simulate else 'chunk-by-chunk'} decoding: {method}, chunk_size={chunk_size} "
        f"({'full context' if chunk_size == -1 else f'{chunk_size * 20} ms'}), left_context_frames={left_context}, "
        f"pieces of {args.piece_ms:g} ms, batch_size={args.batch_size}"
    )

    audio_seconds, start_time = 0.0, time.perf_counter()
    with DatadirWriter(args.output_dir) as writer:
        batch = []
        utterances = read_audio(args.data_path_and_name_and_type, args.key_file)
        for key, rate, array in utterances:
            batch.append((key, check_waveform(key, rate, array, sample_rate)))
            audio_seconds += array.shape[0] / rate
            if len(batch) == args.batch_size:
                write(writer, decode_batch(args, model, method, batch, piece), token_text)
                batch = []
        if batch:
            write(writer, decode_batch(args, model, method, batch, piece), token_text)
    elapsed = time.perf_counter() - start_time
    logging.info(
        f"decoded {audio_seconds:.1f} s of audio in {elapsed:.1f} s (real-time factor {elapsed / max(audio_seconds, 1e-9):.3f})"
    )


def write(writer, results: Dict[str, List[Hypothesis]], token_text: TokenText) -> None:
    """``Nbest_recog/{token,token_int,score,text}`` lines per key, as ``asr_inference`` writes them."""
    for key, hyps in results.items():
        for n, hyp in enumerate(hyps, 1):
            tokens, text = token_text(hyp.tokens)
            best = writer[f"{n}best_recog"]
            best["token"][key] = " ".join(tokens)
            best["token_int"][key] = " ".join(map(str, hyp.tokens))
            best["score"][key] = str(hyp.score)
            if text is not None:
                best["text"][key] = text
        logging.info(f"{key}: best hypo: {token_text(hyps[0].tokens)[1]}")


def main(cmd: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    try:
        inference(args)
    except ValueError as error:
        logging.error(str(error))
        print(f"asr_inference_streaming: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
