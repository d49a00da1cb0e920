"""Running an exported folder with onnxruntime: :class:`OnnxAsrModel`, CTC and transducer greedy decoding.

    model = OnnxAsrModel("exp/onnx")                 # or OnnxAsrModel("exp/onnx", int8=True)
    texts = model.transcribe([waveform, ...])         # float32 waveforms in [-1, 1), 16 kHz
    log_probs, lengths = model.ctc(features, feature_lengths)

Greedy decoding here is the deterministic reference both for the PyTorch model and for sherpa-onnx:

* CTC: the best token per frame, repeats merged, blanks dropped (sherpa-onnx ``OfflineCtcGreedySearchDecoder``).
* transducer: at most one token per encoder frame (ESPnet's ``BeamSearchTransducer`` with ``beam_size: 1`` and
  sherpa-onnx's offline greedy search alike); the decoder starts from the context ``[-1, ..., -1, blank]`` and
  advances on every emitted token; ``<unk>`` counts as blank, as in sherpa-onnx.
"""

import pathlib
from typing import List, Optional, Sequence, Tuple

import numpy as np
import yaml

from hybrid_encoders.deploy.dependencies import require
from hybrid_encoders.deploy.espnet_model import ExportError
from hybrid_encoders.deploy.features import FeatureExtractor


def ctc_greedy(log_probs: np.ndarray, lengths: np.ndarray, blank_id: int) -> List[List[int]]:
    """Greedy CTC decoding of a batch.

    Args:
        log_probs: (N, T, V) per-frame scores (log-probabilities or logits).
        lengths: (N,) valid frames.
        blank_id: the blank token.

    Returns:
        N token-id lists.
    """
    results = []
    for scores, length in zip(log_probs, lengths):
        best = scores[: int(length)].argmax(axis=-1)
        keep = np.ones(len(best), dtype=bool)
        keep[1:] = best[1:] != best[:-1]
        results.append([int(token) for token in best[keep] if token != blank_id])
    return results


def transducer_greedy(
    encoder_out: np.ndarray,
    lengths: np.ndarray,
    decoder,
    joiner,
    context_size: int,
    blank_id: int = 0,
    unk_id: int = -1,
) -> List[List[int]]:
    """Greedy transducer decoding of a batch, one token at most per frame, all utterances stepped together.

    Args:
        encoder_out: (N, T, J) projected encoder output; lengths: (N,) valid frames.
        decoder: callable (M, context_size) int64 -> (M, J) decoder output.
        joiner: callable ((M, J), (M, J)) -> (M, V) logits.
        context_size: labels the decoder reads.
        blank_id, unk_id: tokens that emit nothing (unk_id -1: none).

    Returns:
        N token-id lists.
    """
    batch = encoder_out.shape[0]
    contexts = np.full((batch, context_size), -1, dtype=np.int64)
    contexts[:, -1] = blank_id
    decoder_out = decoder(contexts)
    hypotheses: List[List[int]] = [[] for _ in range(batch)]
    for frame in range(int(lengths.max()) if batch else 0):
        active = np.flatnonzero(lengths > frame)
        best = joiner(encoder_out[active, frame], decoder_out[active]).argmax(axis=-1)
        emitted = [(row, int(token)) for row, token in zip(active, best) if token not in (blank_id, unk_id)]
        if not emitted:
            continue
        rows = np.array([row for row, _ in emitted])
        for row, token in emitted:
            hypotheses[row].append(token)
        contexts[rows] = np.concatenate([contexts[rows, 1:], np.array([[t] for _, t in emitted])], axis=1)
        decoder_out[rows] = decoder(contexts[rows])
    return hypotheses


def tokens_to_text(tokens: Sequence[str]) -> str:
    """Characters / BPE pieces -> text: ESPnet's ``<space>`` and sentencepiece's ``▁`` become spaces."""
    return "".join(tokens).replace("<space>", " ").replace("▁", " ").strip()


def read_manifest(folder: pathlib.Path) -> dict:
    """The ``deploy.yaml`` of an export folder; a clear error where there is none."""
    path = pathlib.Path(folder) / "deploy.yaml"
    if not path.is_file():
        raise ExportError(f"--onnx {folder}: no deploy.yaml; not a folder written by hybrid-encoders export onnx")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


class OnnxAsrModel:
    """An exported folder (``hybrid-encoders export onnx``) run with onnxruntime.

    Args:
        folder: the export folder.
        int8: use the int8 graphs (``--quantize int8`` at export).
        decoding: ``ctc`` or ``transducer``; default: transducer for transducer exports, else CTC.
        threads: intra-op threads of each session (0 = onnxruntime's default).
    """

    def __init__(self, folder, int8: bool = False, decoding: Optional[str] = None, threads: int = 0):
        ort = require("onnxruntime")
        self.folder = pathlib.Path(folder)
        self.manifest = read_manifest(self.folder)
        if self.manifest.get("streaming"):
            raise ExportError(
                f"--onnx {folder}: a streaming export (chunk graphs with states); run it with sherpa-onnx's "
                "OnlineRecognizer (docs/deployment.md), or export without --streaming for whole utterances"
            )
        graphs = self.manifest["graphs"]
        self.decoding = decoding or ("transducer" if self.manifest["kind"] == "transducer" else "ctc")
        needed = ("encoder", "decoder", "joiner") if self.decoding == "transducer" else ("ctc",)
        missing = [name for name in needed if name not in graphs]
        if missing:
            raise ExportError(f"--onnx {folder}: {self.decoding} decoding needs {missing}, the export has {list(graphs)}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.sessions = {}
        for name in needed:
            file = graphs[name]["file"]
            if int8 and name in ("ctc", "encoder"):
                if name not in self.manifest.get("quantized", {}):
                    raise ExportError(f"--onnx {folder}: no int8 {name} graph; export with --quantize int8")
                file = self.manifest["quantized"][name]
            self.sessions[name] = ort.InferenceSession(
                str(self.folder / file), options, providers=["CPUExecutionProvider"]
            )
        self.tokens = [line.rsplit(" ", 1)[0] for line in (self.folder / "tokens.txt").read_text("utf-8").splitlines()]
        self.tokens = ["<space>" if token == "▁" else token for token in self.tokens]
        self._features: Optional[FeatureExtractor] = None

    @property
    def min_input_frames(self) -> int:
        return int(self.manifest["min_input_frames"])

    def _check(self, features: np.ndarray, lengths: np.ndarray) -> None:
        if features.ndim != 3 or features.shape[2] != self.manifest["feature_dim"]:
            raise ValueError(f"features must be (N, T, {self.manifest['feature_dim']}), got {features.shape}")
        if lengths.shape != (features.shape[0],) or lengths.max(initial=0) > features.shape[1]:
            raise ValueError(f"lengths must be (N,) values <= T = {features.shape[1]}, got {lengths.tolist()}")
        if lengths.size and lengths.min() < self.min_input_frames:
            raise ValueError(
                f"an input has {int(lengths.min())} frames; the encoder needs at least {self.min_input_frames}"
            )

    def _run(self, name: str, features: np.ndarray, lengths: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        features = np.ascontiguousarray(features, dtype=np.float32)
        lengths = np.asarray(lengths, dtype=np.int64)
        self._check(features, lengths)
        outputs = self.sessions[name].run(None, {"x": features, "x_lens": lengths})
        return outputs[0], outputs[1]

    def ctc(self, features: np.ndarray, lengths: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(N, T, F) features, (N,) lengths -> (N, T', V) CTC log-probabilities, (N,) lengths."""
        return self._run("ctc", features, lengths)

    def encoder(self, features: np.ndarray, lengths: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(N, T, F), (N,) -> (N, T', J) transducer encoder output (joint space), (N,) lengths."""
        return self._run("encoder", features, lengths)

    def decoder(self, contexts: np.ndarray) -> np.ndarray:
        """(M, context_size) int64 labels (-1 = before the start) -> (M, J)."""
        return self.sessions["decoder"].run(None, {"y": np.asarray(contexts, dtype=np.int64)})[0]

    def joiner(self, encoder_out: np.ndarray, decoder_out: np.ndarray) -> np.ndarray:
        """(M, J), (M, J) -> (M, V) logits."""
        inputs = {"encoder_out": np.ascontiguousarray(encoder_out), "decoder_out": np.ascontiguousarray(decoder_out)}
        return self.sessions["joiner"].run(None, inputs)[0]

    def decode_features(self, features: np.ndarray, lengths: np.ndarray) -> List[List[int]]:
        """Greedy token ids of a padded feature batch."""
        blank_id = int(self.manifest["blank_id"])
        if self.decoding == "ctc":
            return ctc_greedy(*self.ctc(features, lengths), blank_id)
        encoder_out, encoder_lengths = self.encoder(features, lengths)
        return transducer_greedy(
            encoder_out, encoder_lengths, self.decoder, self.joiner, int(self.manifest["context_size"]), blank_id,
            int(self.manifest["unk_id"]),
        )  # fmt: skip

    @property
    def feature_extractor(self) -> FeatureExtractor:
        if self._features is None:
            self._features = FeatureExtractor.from_folder(self.folder)
        return self._features

    def transcribe(self, waveforms: Sequence[np.ndarray]) -> List[str]:
        """Texts of float32 waveforms in [-1, 1) at the model's sampling rate, decoded as one padded batch."""
        features, lengths = self.feature_extractor(waveforms)
        return [tokens_to_text([self.tokens[i] for i in ids]) for ids in self.decode_features(features, lengths)]
