"""sherpa-onnx, a runtime nobody here wrote, loads our exports and decodes wav files to the tokens PyTorch gives.

sherpa-onnx computes its own Kaldi fbank features (kaldi-native-fbank) from the audio; the models were built with
``frontend: kaldi_fbank`` (torchaudio's Kaldi fbank), so any difference would show as different tokens. Random
weights give garbage, but the same garbage: the output layers are biased so that non-blank tokens are emitted and
``<unk>`` (which sherpa-onnx decodes as blank) never is. Each stream is decoded alone, as PyTorch decodes it.
"""

import os
import pathlib

import pytest

from deploy_helpers import TOKENS, evaluate_report, exported, pytorch_greedy, write_test_wavs

from hybrid_encoders.cli import main

sherpa_onnx = pytest.importorskip("sherpa_onnx")


def _decode(recognizer, wav_path):
    import soundfile

    audio, rate = soundfile.read(str(wav_path), dtype="float32")
    stream = recognizer.create_stream()
    stream.accept_waveform(rate, audio)
    recognizer.decode_stream(stream)
    return stream.result


def _expected_symbols(ids):
    return ["▁" if TOKENS[i] == "<space>" else TOKENS[i] for i in ids]


def _check(recognizer, model, wavs):
    emitted = 0
    for wav in wavs:
        expected = pytorch_greedy(model, wav)
        result = _decode(recognizer, wav)
        assert [s.replace(" ", "▁") for s in result.tokens] == _expected_symbols(expected), wav.name
        emitted += len(expected)
    assert emitted >= 5  # not a vacuous comparison of empty outputs


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    return write_test_wavs(tmp_path_factory.mktemp("wavs"))


def test_zipformer_transducer_with_from_transducer(wavs):
    model, folder = exported("zipformer")
    recognizer = sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(folder / "encoder.onnx"), decoder=str(folder / "decoder.onnx"),
        joiner=str(folder / "joiner.onnx"), tokens=str(folder / "tokens.txt"), num_threads=1,
        decoding_method="greedy_search",
    )  # fmt: skip
    _check(recognizer, model, wavs)


@pytest.mark.parametrize("name", ["zipformer", "squeezeformer", "hybridformer"])
def test_ctc_with_from_zipformer_ctc(name, wavs):
    """zipformer2_ctc is sherpa-onnx's generic CTC convention (features + lengths -> log_probs + lengths, Kaldi
    fbank): Squeezeformer and HybridFormer use it too (docs/deployment.md says why not nemo_ctc / wenet_ctc)."""
    model, folder = exported(name)
    model_for_ctc = model
    if name == "zipformer":  # the transducer's CTC head: PyTorch's CTC greedy of the same model
        model_for_ctc = _CtcView(model)
    recognizer = sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(
        model=str(folder / "ctc.onnx"), tokens=str(folder / "tokens.txt"), num_threads=1,
        decoding_method="greedy_search",
    )  # fmt: skip
    _check(recognizer, model_for_ctc, wavs)


class _CtcView:
    """A transducer model seen through its CTC head (pytorch_greedy then takes the CTC branch)."""

    joint_network = None

    def __init__(self, model):
        self.encode, self.ctc = model.encode, model.ctc


def test_transcribe_command_matches_pytorch(wavs, capsys):
    """``hybrid-encoders transcribe --onnx DIR a.wav b.wav``: one line per file, PyTorch's greedy text."""
    model, folder = exported("zipformer")
    assert main(["transcribe", "--onnx", str(folder), *map(str, wavs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = ["".join(TOKENS[i] for i in pytorch_greedy(model, wav)).replace("<space>", " ").strip() for wav in wavs]
    assert lines == expected


def test_sherpa_onnx_offline_command_line_tool(wavs):
    """sherpa-onnx's own executable (package sherpa-onnx-bin) decodes the transducer export to PyTorch's tokens."""
    import json
    import shutil
    import subprocess
    import sys

    executable = shutil.which("sherpa-onnx-offline", path=f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}")
    if executable is None:
        pytest.skip("sherpa-onnx-offline not installed (pip install sherpa-onnx-bin)")
    model, folder = exported("zipformer")
    result = subprocess.run(
        [executable, f"--encoder={folder / 'encoder.onnx'}", f"--decoder={folder / 'decoder.onnx'}",
         f"--joiner={folder / 'joiner.onnx'}", f"--tokens={folder / 'tokens.txt'}", "--decoding-method=greedy_search",
         str(wavs[0])],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    line = next(line for line in (result.stdout + result.stderr).splitlines() if line.startswith("{"))
    assert json.loads(line)["tokens"] == _expected_symbols(pytorch_greedy(model, wavs[0]))


def test_evaluate_decodes_an_offline_export_in_every_runtime(wavs, tmp_path, capsys):
    """``python -m hybrid_encoders.deploy.evaluate``: PyTorch, onnxruntime fp32 and int8 and sherpa-onnx on a data
    folder; fp32 onnxruntime and sherpa-onnx give PyTorch's hypotheses."""
    from hybrid_encoders.deploy.evaluate import main as evaluate_main

    _, folder = exported("squeezeformer")
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text("".join(f"{wav.stem} {wav}\n" for wav in wavs))
    (data / "text").write_text("".join(f"{wav.stem} a b\n" for wav in wavs))
    experiment = ["--config", str(folder.parent / "config.yaml"), "--model", str(folder.parent / "model.pth")]

    assert evaluate_main(["--onnx", str(folder), "--data", str(data), *experiment, "--int8", "--sherpa"]) == 0

    header, rows = evaluate_report(capsys.readouterr().out)
    assert header.startswith(f"{len(wavs)} utterances") and header.endswith("ctc greedy decoding")
    assert [row.split()[0] for row in rows] == ["pytorch", "ort_fp32", "ort_int8", "sherpa_onnx"]
    for row in (rows[1], rows[3]):
        assert row.endswith("hypotheses differing from pytorch: 0")
