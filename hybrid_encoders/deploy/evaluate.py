"""Greedy WER of an exported model on a Kaldi data folder, in every runtime, and whether the runtimes agree.

    python -m hybrid_encoders.deploy.evaluate --onnx exp/onnx --data data/test \
        [--config exp/asr/config.yaml --model exp/asr/valid.loss.ave.pth] [--sherpa] [--int8]

Decodes every utterance of ``wav.scp`` alone (no padding) with: onnxruntime fp32 (always), onnxruntime int8
(``--int8``), sherpa-onnx's ``OfflineRecognizer`` on the same graphs (``--sherpa``: ``from_transducer`` for
transducer decoding, ``from_zipformer_ctc`` for CTC), and the PyTorch model (``--config`` / ``--model``: ESPnet's
``encode`` and greedy search, the reference). Prints each runtime's WER against ``text``, its real-time factor and
how many hypotheses differ from the first runtime's, and lists the differing utterances.

A streaming export (``export onnx --streaming``) is decoded chunk by chunk instead: by the PyTorch model's
``forward_streaming`` (``--config`` / ``--model``) and by sherpa-onnx's ``OnlineRecognizer`` (always; with
``--int8`` also on the int8 chunk graph), fed 100 ms pieces as a live client feeds them. sherpa-onnx encodes a chunk
only once one frame beyond it is ready, so both decode the chunks it encodes (the last frames wait for more audio).
"""

import argparse
import itertools
import pathlib
import sys
import time
from typing import Callable, Dict, List, Tuple

import numpy as np

from hybrid_encoders.deploy.dependencies import require
from hybrid_encoders.deploy.runtime import OnnxAsrModel, read_manifest, tokens_to_text


def read_data(folder: pathlib.Path):
    """(keys, wav paths, reference texts) of a Kaldi data folder."""
    wavs = dict(line.split(maxsplit=1) for line in (folder / "wav.scp").read_text().splitlines() if line.strip())
    texts = {}
    for line in (folder / "text").read_text().splitlines():
        key, _, text = line.partition(" ")
        texts[key] = text.strip()
    keys = sorted(wavs)
    return keys, [wavs[key] for key in keys], [texts[key] for key in keys]


def pytorch_decoder(config, model_file, decoding: str) -> Callable[[np.ndarray], str]:
    """Greedy decoding with the PyTorch model: ESPnet's ``encode``, then ``BeamSearchTransducer`` with beam 1 or the
    CTC argmax with repeats merged and blanks dropped."""
    import torch
    from espnet2.asr.transducer.beam_search_transducer import BeamSearchTransducer
    from espnet2.tasks.asr import ASRTask

    model, _ = ASRTask.build_model_from_file(config, model_file, "cpu")
    model.eval()
    tokens = model.token_list

    @torch.no_grad()
    def decode(audio: np.ndarray) -> str:
        speech = torch.from_numpy(audio)[None]
        encoded, _ = model.encode(speech, torch.tensor([speech.size(1)]))
        if decoding == "transducer":
            search = BeamSearchTransducer(model.decoder, model.joint_network, beam_size=1)
            ids = search(encoded[0])[0].yseq[1:]
        else:
            ids = [t for t, _ in itertools.groupby(model.ctc.argmax(encoded)[0].tolist()) if t != 0]
        return tokens_to_text([tokens[i] for i in ids])

    return decode


def pytorch_streaming_tokens(model, audio: np.ndarray, frames: int, stride: int) -> List[int]:
    """Greedy token ids of an ESPnet model with a causal Zipformer, streamed over the chunks sherpa-onnx encodes.

    Features come from the model's own frontend and normalisation; ``forward_streaming`` encodes the chunks that
    sherpa-onnx encodes (``frames`` feature frames each, advancing by ``stride``): chunk k once more than
    ``k * stride + frames`` frames are ready (its ``IsReady`` asks for one frame beyond the chunk), so the tail that
    completes no such chunk is left out. Then greedy transducer search or the CTC argmax with repeats merged and
    blanks dropped.

    Args:
        model: an ``ESPnetASRModel`` (CTC) or transducer, eval mode.
        audio: (samples,) float32 16 kHz waveform.
        frames, stride: the streaming manifest's ``T`` and ``decode_chunk_len`` (``deploy.yaml``).
    """
    import torch
    from espnet2.asr.transducer.beam_search_transducer import BeamSearchTransducer

    speech = torch.from_numpy(audio)[None]
    with torch.no_grad():
        features, lengths = model.frontend(speech, torch.tensor([speech.size(1)]))
        if model.normalize is not None:
            features, lengths = model.normalize(features, lengths)
        if features.size(1) <= frames:
            return []
        chunks = (features.size(1) - frames - 1) // stride + 1
        usable = stride * (chunks - 1) + frames
        encoded, _, _ = model.encoder.forward_streaming(features[:, :usable], torch.tensor([usable]))
        if getattr(model, "joint_network", None) is not None:
            search = BeamSearchTransducer(model.decoder, model.joint_network, beam_size=1)
            return [int(token) for token in search(encoded[0])[0].yseq[1:]]
        best = model.ctc.argmax(encoded)[0].tolist()
    return [token for token, _ in itertools.groupby(best) if token != 0]


def sherpa_online_tokens(recognizer, audio: np.ndarray, piece: int = 1600) -> List[str]:
    """The tokens sherpa-onnx's ``OnlineRecognizer`` emits for ``audio`` (16 kHz) fed in ``piece``-sample pieces
    (100 ms), decoding whenever a chunk is ready; its word-boundary token is returned as ``▁``."""
    stream = recognizer.create_stream()
    for start in range(0, len(audio), piece):
        stream.accept_waveform(16000, audio[start : start + piece])
        while recognizer.is_ready(stream):
            recognizer.decode_stream(stream)
    stream.input_finished()
    while recognizer.is_ready(stream):
        recognizer.decode_stream(stream)
    return [token.replace(" ", "▁") for token in recognizer.get_result_all(stream).tokens]


def pytorch_streaming_decoder(config, model_file, streaming: dict) -> Callable[[np.ndarray], str]:
    """Text of :func:`pytorch_streaming_tokens` with the chunking of a streaming export's manifest."""
    from espnet2.tasks.asr import ASRTask

    model, _ = ASRTask.build_model_from_file(config, model_file, "cpu")
    model.eval()
    tokens = model.token_list

    def decode(audio: np.ndarray) -> str:
        ids = pytorch_streaming_tokens(model, audio, streaming["T"], streaming["decode_chunk_len"])
        return tokens_to_text([tokens[i] for i in ids])

    return decode


def sherpa_online_decoder(
    folder: pathlib.Path, decoding: str, threads: int, int8: bool
) -> Callable[[np.ndarray], str]:
    """sherpa-onnx's ``OnlineRecognizer`` on a streaming export (greedy search), through :func:`sherpa_online_tokens`."""
    sherpa_onnx = require("sherpa_onnx")
    suffix = ".int8.onnx" if int8 else ".onnx"
    tokens = str(folder / "tokens.txt")
    if decoding == "transducer":
        recognizer = sherpa_onnx.OnlineRecognizer.from_transducer(
            encoder=str(folder / f"encoder{suffix}"), decoder=str(folder / "decoder.onnx"),
            joiner=str(folder / "joiner.onnx"), tokens=tokens, num_threads=threads, decoding_method="greedy_search",
        )  # fmt: skip
    else:
        recognizer = sherpa_onnx.OnlineRecognizer.from_zipformer2_ctc(
            model=str(folder / f"ctc{suffix}"), tokens=tokens, num_threads=threads, decoding_method="greedy_search"
        )
    return lambda audio: tokens_to_text(sherpa_online_tokens(recognizer, audio))


def sherpa_decoder(folder: pathlib.Path, decoding: str, threads: int) -> Callable[[np.ndarray], str]:
    sherpa_onnx = require("sherpa_onnx")
    tokens = str(folder / "tokens.txt")
    if decoding == "transducer":
        recognizer = sherpa_onnx.OfflineRecognizer.from_transducer(
            encoder=str(folder / "encoder.onnx"), decoder=str(folder / "decoder.onnx"),
            joiner=str(folder / "joiner.onnx"), tokens=tokens, num_threads=threads, decoding_method="greedy_search",
        )  # fmt: skip
    else:
        recognizer = sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(
            model=str(folder / "ctc.onnx"), tokens=tokens, num_threads=threads, decoding_method="greedy_search"
        )

    def decode(audio: np.ndarray) -> str:
        stream = recognizer.create_stream()
        stream.accept_waveform(16000, audio)
        recognizer.decode_stream(stream)
        return stream.result.text.strip()

    return decode


Decoders = Dict[str, Callable[[np.ndarray], str]]


def offline_decoders(args: argparse.Namespace) -> Tuple[str, Decoders]:
    """The decoding (``--decoding`` or the export's default) and its decoders: PyTorch (with ``--config``),
    onnxruntime fp32 and int8, sherpa-onnx's ``OfflineRecognizer``."""
    fp32 = OnnxAsrModel(args.onnx, decoding=args.decoding, threads=args.threads)
    decoding = fp32.decoding
    decoders: Decoders = {}
    if args.config:
        decoders["pytorch"] = pytorch_decoder(args.config, args.model, decoding)
    decoders["ort_fp32"] = lambda audio: fp32.transcribe([audio])[0]
    if args.int8:
        int8 = OnnxAsrModel(args.onnx, int8=True, decoding=decoding, threads=args.threads)
        decoders["ort_int8"] = lambda audio: int8.transcribe([audio])[0]
    if args.sherpa:
        decoders["sherpa_onnx"] = sherpa_decoder(args.onnx, decoding, args.threads)
    return decoding, decoders


def streaming_decoders(args: argparse.Namespace, streaming: dict) -> Tuple[str, Decoders]:
    """The decoding (transducer where the export has an ``encoder.onnx``, else CTC) and its decoders: PyTorch
    ``forward_streaming`` (with ``--config``), sherpa-onnx's ``OnlineRecognizer`` on the fp32 and (with ``--int8``)
    the int8 chunk graphs."""
    decoding = args.decoding or ("transducer" if (args.onnx / "encoder.onnx").is_file() else "ctc")
    decoders: Decoders = {}
    if args.config:
        decoders["pytorch_streaming"] = pytorch_streaming_decoder(args.config, args.model, streaming)
    decoders["sherpa_online"] = sherpa_online_decoder(args.onnx, decoding, args.threads, int8=False)
    if args.int8:
        decoders["sherpa_online_int8"] = sherpa_online_decoder(args.onnx, decoding, args.threads, int8=True)
    return decoding, decoders


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True, type=pathlib.Path, help="export folder")
    parser.add_argument("--data", required=True, type=pathlib.Path, help="Kaldi data folder (wav.scp, text)")
    parser.add_argument("--decoding", choices=("ctc", "transducer"), default=None)
    parser.add_argument("--config", help="training config.yaml: also decode with the PyTorch model")
    parser.add_argument("--model", help="its model file")
    parser.add_argument("--int8", action="store_true", help="also the int8 graphs")
    parser.add_argument("--sherpa", action="store_true", help="also sherpa-onnx (always, for a streaming export)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import jiwer
    import soundfile

    streaming = read_manifest(args.onnx).get("streaming")
    decoding, decoders = streaming_decoders(args, streaming) if streaming else offline_decoders(args)
    keys, wavs, references = read_data(args.data)
    audios = [soundfile.read(path, dtype="float32")[0] for path in wavs]
    seconds = sum(len(audio) for audio in audios) / 16000
    hypotheses: Dict[str, List[str]] = {}
    chunking = f", chunks of {streaming['decode_chunk_len']} feature frames" if streaming else ""
    print(f"{len(keys)} utterances, {seconds:.0f} s of audio, {decoding} greedy decoding{chunking}")
    for name, decode in decoders.items():
        start = time.perf_counter()
        hypotheses[name] = [decode(audio) for audio in audios]
        elapsed = time.perf_counter() - start
        first = next(iter(hypotheses))
        differ = [k for k, a, b in zip(keys, hypotheses[name], hypotheses[first]) if a != b]
        wer = jiwer.wer(references, [h if h else "<empty>" for h in hypotheses[name]])
        print(f"{name:12s} WER {100 * wer:6.2f} %  RTF {elapsed / seconds:.4f}  hypotheses differing from {first}: "
              f"{len(differ)}" + (f" ({', '.join(differ[:10])})" if differ else ""))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
