"""Streaming export (``export onnx --streaming``): the chunk graphs equal ``forward_streaming`` with their own states,
streams that start at different times share a batch, and sherpa-onnx's OnlineRecognizer decodes wav files to the
tokens our PyTorch streaming gives on the same audio.

The models are tiny causal Zipformers with random weights and Kaldi fbank features (sherpa-onnx computes them), one
CTC model with a global MVN (folded into the graph) and one pruned transducer with a CTC head.
"""

import numpy as np
import pytest
import torch
import yaml

from deploy_helpers import ENCODERS, TOKENS, evaluate_report, save_experiment, write_test_wavs

from hybrid_encoders.cli import main
from hybrid_encoders.deploy import ExportError, OnnxAsrModel, export_onnx
from hybrid_encoders.deploy.evaluate import main as evaluate_main
from hybrid_encoders.deploy.evaluate import pytorch_streaming_tokens, sherpa_online_tokens

CHUNK, LEFT = 16, 32  # embed frames: 320 ms chunks, 640 ms of left context
CAUSAL = {**ENCODERS["zipformer"], "causal": True, "chunk_size": [CHUNK, 32], "left_context_frames": [LEFT]}
WAV_SEED = 4
_EXPORTS = {}


def streaming_export(tmp_path_factory, head: str):
    """(model, folder) of a tiny causal Zipformer with a ``ctc`` or ``transducer`` head, exported once."""
    if head not in _EXPORTS:
        directory = tmp_path_factory.mktemp(f"streaming_{head}")
        config, model_path, model = save_experiment(
            directory, "zipformer", head, "kaldi_fbank", normalize=head == "ctc", seed=1, encoder_conf=CAUSAL
        )
        if head == "ctc":
            _centre_ctc_head(model, directory)
            torch.save(model.state_dict(), model_path)
        if head == "transducer":  # through the command line, with int8 graphs
            arguments = ["--config", str(config), "--model", str(model_path), "--out", str(directory / "onnx")]
            arguments += ["--streaming", "--chunk-size", str(CHUNK), "--quantize", "int8"]
            assert main(["export", "onnx", *arguments]) == 0
        else:
            export_onnx(config, model_path, directory / "onnx", streaming=True, chunk_size=CHUNK)
        _EXPORTS[head] = (model, directory / "onnx")
    return _EXPORTS[head]


@torch.no_grad()
def _centre_ctc_head(model, directory, scale: float = 10.0) -> None:
    """A random Zipformer's output frames differ little from their mean (std 0.07 around values of 2.5), so a random
    CTC layer gives one token per utterance. Centred on the mean frame of a test wav and scaled up, its argmax
    follows the differences between frames. ``<unk>`` stays far below the others (sherpa-onnx decodes it as blank)."""
    import soundfile

    audio, _ = soundfile.read(str(write_test_wavs(directory, count=1, seed=WAV_SEED)[0]), dtype="float32")
    encoded, _ = model.encode(torch.from_numpy(audio)[None], torch.tensor([len(audio)]))
    layer = model.ctc.ctc_lo
    layer.weight.mul_(scale)
    layer.bias.sub_(layer.weight @ encoded[0].mean(0))
    layer.bias[TOKENS.index("<unk>")] = -50.0


@pytest.fixture(scope="module")
def ctc_export(tmp_path_factory):
    return streaming_export(tmp_path_factory, "ctc")


@pytest.fixture(scope="module")
def transducer_export(tmp_path_factory):
    return streaming_export(tmp_path_factory, "transducer")


def _session(path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _stack(first, second, axes):
    return [np.concatenate((a, b), axis=axis) for a, b, axis in zip(first, second, axes)]


def test_manifest_and_sherpa_metadata(ctc_export):
    import onnx

    model, folder = ctc_export
    manifest = yaml.safe_load((folder / "deploy.yaml").read_text())
    assert manifest["streaming"]["chunk_size"] == CHUNK and manifest["streaming"]["T"] == 2 * CHUNK + 13
    metadata = {entry.key: entry.value for entry in onnx.load(str(folder / "ctc.onnx")).metadata_props}
    factors = model.encoder.config["downsampling_factor"]
    assert metadata["left_context_len"] == ",".join(str(LEFT // factor) for factor in factors)
    assert metadata["decode_chunk_len"] == str(2 * CHUNK) and metadata["T"] == str(2 * CHUNK + 13)
    assert metadata["num_encoder_layers"] == ",".join(["1"] * len(factors))
    with pytest.raises(ExportError, match="streaming export"):
        OnnxAsrModel(folder)


def test_staggered_streams_in_one_batch_equal_forward_streaming(ctc_export):
    """Stream A encodes one chunk alone; then stream B starts and both share a batch for three chunks (so the graph
    masks A's and B's cached frames differently). Each equals forward_streaming of that stream alone."""
    model, folder = ctc_export
    manifest = yaml.safe_load((folder / "deploy.yaml").read_text())
    frames, stride = manifest["streaming"]["T"], manifest["streaming"]["decode_chunk_len"]
    session = _session(folder / "ctc.onnx")
    names = [graph_input.name for graph_input in session.get_inputs()]
    generator = torch.Generator().manual_seed(5)
    utterances = [torch.randn(stride * 3 + frames, 80, generator=generator) * 2 - 5 for _ in range(2)]

    def initial():
        from hybrid_encoders.deploy.streaming_graphs import StreamingChunkGraph

        graph = StreamingChunkGraph(None, model.encoder, None)
        return [state.numpy() for state in graph.initial_states(1)], graph.state_batch_axes()

    states_a, axes = initial()
    output_a, *states_a = session.run(None, dict(zip(names, [utterances[0][None, :frames].numpy(), *states_a])))
    states = _stack(states_a, initial()[0], axes)
    outputs = [[output_a[0]], []]
    for chunk in range(3):
        pieces = [utterances[0][stride * (chunk + 1) :][:frames], utterances[1][stride * chunk :][:frames]]
        output, *states = session.run(None, dict(zip(names, [torch.stack(pieces).numpy(), *states])))
        outputs[0].append(output[0])
        outputs[1].append(output[1])
    assert states[-1].tolist() == [4 * CHUNK, 3 * CHUNK]

    for utterance, pieces in zip(utterances, outputs):
        chunks = len(pieces)
        features = utterance[None, : stride * (chunks - 1) + frames]
        lengths = torch.tensor([features.size(1)])
        with torch.no_grad():
            normalized, _ = model.normalize(features.clone(), lengths)
            encoded, olens, _ = model.encoder.forward_streaming(normalized, lengths)
            expected = model.ctc.log_softmax(encoded)[0].numpy()
        assert int(olens[0]) == chunks * CHUNK // 2
        np.testing.assert_allclose(np.concatenate(pieces), expected, atol=1e-4, rtol=0)


def test_bad_streaming_options(ctc_export, tmp_path):
    model, folder = ctc_export
    config, weights = folder.parent / "config.yaml", folder.parent / "model.pth"
    with pytest.raises(ExportError, match="add --streaming"):
        export_onnx(config, weights, tmp_path / "a", chunk_size=CHUNK)
    with pytest.raises(ExportError, match="--streaming: .*chunk_size"):
        export_onnx(config, weights, tmp_path / "b", streaming=True, chunk_size=12)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_non_causal_model_is_refused(tmp_path):
    config, weights, _ = save_experiment(tmp_path / "offline", "squeezeformer", "ctc", "kaldi_fbank", normalize=False)
    with pytest.raises(ExportError, match="needs a causal Zipformer.*encoder squeezeformer"):
        export_onnx(config, weights, tmp_path / "out", streaming=True)


# ---- sherpa-onnx's OnlineRecognizer ----


def _check_sherpa(recognizer, model, folder, wavs):
    import soundfile

    manifest = yaml.safe_load((folder / "deploy.yaml").read_text())
    frames, stride = manifest["streaming"]["T"], manifest["streaming"]["decode_chunk_len"]
    emitted = 0
    for wav in wavs:
        audio, _ = soundfile.read(str(wav), dtype="float32")
        expected = pytorch_streaming_tokens(model, audio, frames, stride)
        symbols = ["▁" if TOKENS[token] == "<space>" else TOKENS[token] for token in expected]
        assert sherpa_online_tokens(recognizer, audio) == symbols, wav.name
        emitted += len(expected)
    assert emitted >= 5  # not a vacuous comparison of empty outputs


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    return write_test_wavs(tmp_path_factory.mktemp("streaming_wavs"), seed=WAV_SEED)


def test_sherpa_online_zipformer2_ctc(ctc_export, wavs):
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    model, folder = ctc_export
    recognizer = sherpa_onnx.OnlineRecognizer.from_zipformer2_ctc(
        tokens=str(folder / "tokens.txt"), model=str(folder / "ctc.onnx"), num_threads=1
    )
    _check_sherpa(recognizer, model, folder, wavs)


def test_sherpa_online_transducer(transducer_export, wavs):
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    model, folder = transducer_export
    recognizer = sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(folder / "tokens.txt"), encoder=str(folder / "encoder.onnx"), decoder=str(folder / "decoder.onnx"),
        joiner=str(folder / "joiner.onnx"), num_threads=1,
    )  # fmt: skip
    _check_sherpa(recognizer, model, folder, wavs)


def test_int8_streaming_encoder_runs_in_sherpa_onnx(transducer_export, wavs):
    """The int8 chunk graph loads and decodes in sherpa-onnx (its tokens may differ from fp32's: not compared)."""
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    import soundfile

    _, folder = transducer_export
    assert yaml.safe_load((folder / "deploy.yaml").read_text())["quantized"]["encoder"] == "encoder.int8.onnx"
    recognizer = sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(folder / "tokens.txt"), encoder=str(folder / "encoder.int8.onnx"),
        decoder=str(folder / "decoder.onnx"), joiner=str(folder / "joiner.onnx"), num_threads=1,
    )  # fmt: skip
    audio, _ = soundfile.read(str(wavs[0]), dtype="float32")
    assert len(sherpa_online_tokens(recognizer, audio)) > 0


def test_evaluate_decodes_a_streaming_export_with_pytorch_and_sherpa(ctc_export, wavs, tmp_path, capsys):
    pytest.importorskip("sherpa_onnx")
    model, folder = ctc_export
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text("".join(f"{wav.stem} {wav}\n" for wav in wavs))
    (data / "text").write_text("".join(f"{wav.stem} a b\n" for wav in wavs))
    experiment = ["--config", str(folder.parent / "config.yaml"), "--model", str(folder.parent / "model.pth")]

    assert evaluate_main(["--onnx", str(folder), "--data", str(data), *experiment]) == 0

    header, rows = evaluate_report(capsys.readouterr().out)
    stride = yaml.safe_load((folder / "deploy.yaml").read_text())["streaming"]["decode_chunk_len"]
    assert header.endswith(f"ctc greedy decoding, chunks of {stride} feature frames")
    assert [row.split()[0] for row in rows] == ["pytorch_streaming", "sherpa_online"]
    assert rows[1].endswith("hypotheses differing from pytorch_streaming: 0")


class _FrameCountingModel:
    """Stands in for an ESPnet CTC model: ``n`` feature frames whatever the audio; records the frames encoded."""

    def __init__(self, n: int):
        self.n, self.encoded, self.normalize = n, [], None
        self.encoder = self
        self.ctc = self

    def frontend(self, speech, lengths):
        return torch.zeros(1, self.n, 80), torch.tensor([self.n])

    def forward_streaming(self, features, lengths):
        self.encoded.append(features.size(1))
        return torch.zeros(1, 1, 4), lengths, None

    def argmax(self, encoded):
        return torch.zeros(1, encoded.size(1), dtype=torch.long)


@pytest.mark.parametrize("n, chunks", [(45, 0), (46, 1), (77, 1), (78, 2), (109, 2), (110, 3)])
def test_pytorch_streaming_encodes_the_chunks_sherpa_onnx_encodes(n, chunks):
    # sherpa-onnx's IsReady: chunk k (T frames from k * stride) is encoded once more than k * stride + T are ready
    model, frames, stride = _FrameCountingModel(n), 45, 32
    assert pytorch_streaming_tokens(model, np.zeros(16000, np.float32), frames, stride) == []
    assert model.encoded == ([frames + (chunks - 1) * stride] if chunks else [])
