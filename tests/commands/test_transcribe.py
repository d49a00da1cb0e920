"""``hybrid-encoders transcribe``: offline and streaming give the same text; partial results; real-time pace; bad
input. The model is the tiny causal Zipformer model of ``tests/streaming`` (loaded in place of the files)."""

import argparse
import sys
import time
from pathlib import Path

import pytest
import soundfile

import hybrid_encoders.streaming.recognizer as recognizer_module
from hybrid_encoders.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "streaming"))
from streaming_testing import one_thread  # noqa: E402,F401 (autouse fixture)
from test_recognizer import make_model, waveform  # noqa: E402


@pytest.fixture
def audio(tmp_path, monkeypatch):
    model = make_model(tmp_path)
    monkeypatch.setattr(
        recognizer_module, "load_model", lambda *_: (model, argparse.Namespace(token_type="char", bpemodel=None))
    )
    path = tmp_path / "a.wav"
    soundfile.write(str(path), waveform(1.5, 3).numpy(), 16000)
    return path


def transcribe(*arguments):
    return main(["transcribe", "--config", "config.yaml", "--model", "model.pth", *map(str, arguments)])


def test_streaming_prints_partials_and_the_offline_text(audio, capsys):
    assert transcribe(audio, audio) == 0
    offline = capsys.readouterr().out.splitlines()
    assert len(offline) == 2 and offline[0] == offline[1] and len(offline[0]) >= 3
    assert transcribe("--streaming", "--piece_ms", 50, audio) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == offline[:1]
    partials = [line[len("partial: ") :] for line in captured.err.splitlines() if line.startswith("partial: ")]
    assert len(partials) >= 3 and len(set(partials)) == len(partials)  # one line per change
    assert all(offline[0].startswith(partial) for partial in partials)  # greedy CTC never revises


def test_realtime_feeds_at_the_pace_of_the_audio(audio, capsys):
    start = time.perf_counter()
    assert transcribe("--streaming", "--realtime", audio) == 0
    assert time.perf_counter() - start >= 1.5
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--realtime", "AUDIO"], "--realtime needs --streaming"),
        (["--streaming", "--piece_ms", 0, "AUDIO"], "--piece_ms must be > 0"),
        (["--streaming", "RATE8K"], "audio at 8000 Hz, but the model's front end expects 16000 Hz"),
        (["--streaming", "--chunk_size", -1, "AUDIO"], "full context can only be simulated"),
        (["MISSING"], "cannot read audio"),
    ],
)
def test_bad_input_stops_with_a_clear_error(audio, capsys, arguments, message):
    rate8k = audio.parent / "b.wav"
    soundfile.write(str(rate8k), waveform(0.5, 1).numpy(), 8000)
    names = {"AUDIO": audio, "RATE8K": rate8k, "MISSING": audio.parent / "missing.wav"}
    assert transcribe(*[names.get(a, a) for a in arguments]) == 2
    assert message in capsys.readouterr().err
    assert main(["transcribe", str(audio)]) == 2
    assert "--config and --model are required" in capsys.readouterr().err
