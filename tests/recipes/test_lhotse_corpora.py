"""LibriSpeech / AISHELL-1 preparation through lhotse on tiny fake corpora (no download)."""

import numpy as np
import pytest
import soundfile

from hybrid_encoders.recipes.kaldi_dir import read_data_dir
from hybrid_encoders.recipes.lhotse_corpora import main, prepare_aishell_dirs, prepare_librispeech_dirs

pytest.importorskip("lhotse")


def _tone(path, seconds=0.5, fmt="FLAC"):
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = 0.1 * np.sin(np.arange(int(16000 * seconds)) * 0.1)
    soundfile.write(str(path), samples, 16000, format=fmt)


def _fake_librispeech(root, part, utterances):
    for (speaker, chapter, index), text in utterances.items():
        _tone(root / "LibriSpeech" / part / speaker / chapter / f"{speaker}-{chapter}-{index}.flac")
    by_chapter = {}
    for (speaker, chapter, index), text in utterances.items():
        by_chapter.setdefault((speaker, chapter), []).append(f"{speaker}-{chapter}-{index} {text}")
    for (speaker, chapter), lines in by_chapter.items():
        (root / "LibriSpeech" / part / speaker / chapter / f"{speaker}-{chapter}.trans.txt").write_text(
            "\n".join(lines) + "\n")


def test_librispeech_parts_and_combined_dev(tmp_path):
    _fake_librispeech(tmp_path / "corpus", "dev-clean", {("1089", "134686", "0000"): "HE HOPED THERE WOULD BE STEW",
                                                         ("1089", "134686", "0001"): "STUFF IT INTO YOU"})
    _fake_librispeech(tmp_path / "corpus", "dev-other", {("116", "288045", "0000"): "AS I APPROACHED THE CITY"})
    written = prepare_librispeech_dirs(str(tmp_path / "corpus"), str(tmp_path / "data"), ["dev-clean", "dev-other"],
                                       download=False, nj=1)
    assert written == ["dev_clean", "dev_other", "dev"]
    rows = read_data_dir(str(tmp_path / "data" / "dev"))
    assert [(r.utt_id, r.speaker, r.text) for r in rows] == [
        ("1089-134686-0000", "1089", "HE HOPED THERE WOULD BE STEW"),
        ("1089-134686-0001", "1089", "STUFF IT INTO YOU"),
        ("116-288045-0000", "116", "AS I APPROACHED THE CITY")]
    assert rows[0].wav_path.endswith("dev-clean/1089/134686/1089-134686-0000.flac")
    assert (tmp_path / "data" / "manifests").is_dir()


def test_aishell_speaker_prefix_and_char_text(tmp_path):
    corpus = tmp_path / "corpus" / "aishell" / "data_aishell"
    for part, utt in (("train", "BAC009S0002W0122"), ("dev", "BAC009S0724W0121"), ("test", "BAC009S0764W0121")):
        _tone(corpus / "wav" / part / utt[6:11] / f"{utt}.wav", fmt="WAV")
    (corpus / "transcript").mkdir(parents=True)
    (corpus / "transcript" / "aishell_transcript_v0.8.txt").write_text(
        "BAC009S0002W0122 而 对 楼市 成交 抑制\nBAC009S0724W0121 甚至 出现\nBAC009S0764W0121 广州 市\n", encoding="utf-8")
    written = prepare_aishell_dirs(str(tmp_path / "corpus"), str(tmp_path / "data"), download=False)
    assert sorted(written) == ["dev", "test", "train"]
    [row] = read_data_dir(str(tmp_path / "data" / "train"))
    assert (row.utt_id, row.speaker, row.text) == ("S0002-BAC009S0002W0122", "S0002", "而对楼市成交抑制")


def test_missing_corpus_points_at_db_sh(tmp_path, capsys):
    assert main(["librispeech", "--corpus_root", str(tmp_path), "--download", "false", "--parts", "dev-clean"]) == 1
    assert "LIBRISPEECH in db.sh must name the directory" in capsys.readouterr().err
    assert main(["aishell", "--corpus_root", "", "--download", "false"]) == 1
    assert "AISHELL is empty in db.sh" in capsys.readouterr().err


def test_unknown_part_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown LibriSpeech parts \\['dev-cleen'\\]"):
        prepare_librispeech_dirs(str(tmp_path), str(tmp_path / "data"), ["dev-cleen"], download=False)
