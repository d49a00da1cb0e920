"""Kaldi data directories: writing, reading, and dropping unusable audio with a warning naming the file."""

import logging

import numpy as np
import pytest
import soundfile

from hybrid_encoders.recipes.kaldi_dir import Utterance, drop_unreadable_audio, main, read_data_dir, write_data_dir


def _good_wav(path):
    soundfile.write(str(path), np.full(1600, 0.1, dtype=np.float32), 16000, subtype="PCM_16")
    return str(path)


def test_round_trip_sorted(tmp_path):
    rows = [Utterance("spkB-2", "/b.wav", "HELLO THERE", "spkB"), Utterance("spkA-1", "/a.wav", "HI", "spkA"),
            Utterance("spkA-3", "/c.wav", "YES", "spkA")]
    write_data_dir(str(tmp_path), rows)
    assert read_data_dir(str(tmp_path)) == sorted(rows, key=lambda u: u.utt_id)
    assert (tmp_path / "spk2utt").read_text() == "spkA spkA-1 spkA-3\nspkB spkB-2\n"


def test_id_must_start_with_speaker(tmp_path):
    with pytest.raises(ValueError, match="must start with its speaker id"):
        write_data_dir(str(tmp_path), [Utterance("x-1", "/a.wav", "HI", "spk")])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="wav.scp not found"):
        read_data_dir(str(tmp_path))


def test_corrupt_and_empty_audio_are_dropped_with_a_warning(tmp_path, caplog):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF....WAVEfmt this is not audio" * 10)
    rows = [Utterance("s-1", _good_wav(tmp_path / "good.wav"), "GOOD", "s"),
            Utterance("s-2", str(empty), "EMPTY", "s"),
            Utterance("s-3", str(garbage), "GARBAGE", "s"),
            Utterance("s-4", str(tmp_path / "absent.wav"), "ABSENT", "s")]
    data = tmp_path / "data"
    write_data_dir(str(data), rows)
    with caplog.at_level(logging.WARNING):
        dropped = drop_unreadable_audio(str(data))
    assert dropped == ["s-2", "s-3", "s-4"]
    assert [u.utt_id for u in read_data_dir(str(data))] == ["s-1"]
    assert (data / "spk2utt").read_text() == "s s-1\n"
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{empty}: empty file" in messages
    assert f"{garbage}: unreadable audio" in messages
    assert "absent.wav: file not found" in messages


def test_all_bad_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    write_data_dir(str(tmp_path / "data"), [Utterance("s-1", str(empty), "X", "s")])
    assert main(["check", str(tmp_path / "data")]) == 1
    assert "no readable audio left" in capsys.readouterr().err
