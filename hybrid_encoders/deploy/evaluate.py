"""Greedy WER of an exported model on a Kaldi data folder, in every runtime, and whether the runtimes agree.

    python -m hybrid_encoders.deploy.evaluate --onnx exp/onnx --data data/test \
        [--config exp/asr/config.yaml --model exp/asr/valid.loss.ave.pth] [--sherpa] [--int8]

Decodes every utterance of ``wav.scp`` alone (no padding) with: onnxruntime fp32 (always), onnxruntime int8
(``--int8``), sherpa-onnx's ``OfflineRecognizer`` on the same graphs (``--sherpa``: ``from_transducer`` for
transducer decoding, ``from_zipformer_ctc`` for CTC), and the PyTorch model (``--config`` / ``--model``: ESPnet's
``encode`` and greedy search, the reference). Prints each runtime's WER against ``text``, its real-time factor and
how many hypotheses differ from the first runtime's, and lists the differing utterances.
"""

import argparse
import itertools
import pathlib
import sys
import time
from typing import Callable, Dict, List

import numpy as np

from hybrid_encoders.deploy.dependencies import require
from hybrid_encoders.deploy.runtime import OnnxAsrModel, tokens_to_text


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True, type=pathlib.Path, help="export folder")
    parser.add_argument("--data", required=True, type=pathlib.Path, help="Kaldi data folder (wav.scp, text)")
    parser.add_argument("--decoding", choices=("ctc", "transducer"), default=None)
    parser.add_argument("--config", help="training config.yaml: also decode with the PyTorch model")
    parser.add_argument("--model", help="its model file")
    parser.add_argument("--int8", action="store_true", help="also the int8 graphs")
    parser.add_argument("--sherpa", action="store_true", help="also sherpa-onnx")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import jiwer
    import soundfile

    fp32 = OnnxAsrModel(args.onnx, decoding=args.decoding, threads=args.threads)
    decoding = fp32.decoding
    decoders: Dict[str, Callable[[np.ndarray], str]] = {}
    if args.config:
        decoders["pytorch"] = pytorch_decoder(args.config, args.model, decoding)
    decoders["ort_fp32"] = lambda audio: fp32.transcribe([audio])[0]
    if args.int8:
        int8 = OnnxAsrModel(args.onnx, int8=True, decoding=decoding, threads=args.threads)
        decoders["ort_int8"] = lambda audio: int8.transcribe([audio])[0]
    if args.sherpa:
        decoders["sherpa_onnx"] = sherpa_decoder(args.onnx, decoding, args.threads)
    keys, wavs, references = read_data(args.data)
    audios = [soundfile.read(path, dtype="float32")[0] for path in wavs]
    seconds = sum(len(audio) for audio in audios) / 16000
    hypotheses: Dict[str, List[str]] = {}
    print(f"{len(keys)} utterances, {seconds:.0f} s of audio, {decoding} greedy decoding")
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
