"""WER/CER scoring against an independent edit-distance reference, files written, missing hypotheses."""

import json
import random

import pytest

from hybrid_encoders.recipes.scoring import align, load_counts, score_directory

jiwer = pytest.importorskip("jiwer")


def edit_distance(reference, hypothesis):
    """Plain Levenshtein distance by dynamic programming (the reference implementation of this test)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_token in enumerate(reference, start=1):
        current = [i]
        for j, hyp_token in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_token != hyp_token)))
        previous = current
    return previous[-1]


def test_hand_example():
    counts, alignment = align("SET AN ALARM FOR SEVEN", "SET ALARM FOR ELEVEN PM", "wer")
    assert (counts.correct, counts.substitutions, counts.deletions, counts.insertions) == (3, 1, 1, 1)
    assert counts.reference_length == 5 and counts.sentence_errors == 1
    assert counts.error_rate == pytest.approx(60.0)
    assert alignment.splitlines()[0].startswith("REF: SET AN ALARM")


def test_empty_hypothesis_is_all_deletions():
    counts, _ = align("ONE TWO THREE", "", "wer")
    assert (counts.correct, counts.substitutions, counts.deletions, counts.insertions) == (0, 0, 3, 0)


@pytest.mark.parametrize("unit", ["wer", "cer"])
def test_errors_equal_edit_distance(unit):
    rng = random.Random(0)
    words = ["ONE", "TWO", "THREE", "FOUR", "AT", "THE"]
    for _ in range(50):
        reference = " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))
        hypothesis = " ".join(rng.choice(words) for _ in range(rng.randint(0, 8)))
        counts, _ = align(reference, hypothesis, unit)
        split = str.split if unit == "wer" else list
        assert counts.substitutions + counts.deletions + counts.insertions == edit_distance(
            split(reference), split(hypothesis))
        assert counts.reference_length == len(split(reference))


def test_score_directory_writes_reports(tmp_path, caplog):
    (tmp_path / "text").write_text("a-1 HELLO WORLD\na-2 GOOD MORNING\nb-1 SEVEN THIRTY\n")
    (tmp_path / "hyp").write_text("a-1 HELLO WORD\nb-1 SEVEN THIRTY\n")
    (tmp_path / "utt2spk").write_text("a-1 a\na-2 a\nb-1 b\n")
    totals = score_directory(str(tmp_path / "text"), str(tmp_path / "hyp"), str(tmp_path / "utt2spk"),
                             str(tmp_path / "out"))
    assert "a-2" in caplog.text
    wer = totals["wer"]
    assert (wer.reference_length, wer.substitutions, wer.deletions, wer.sentence_errors) == (6, 1, 2, 2)
    assert wer.error_rate == pytest.approx(50.0)
    assert load_counts(str(tmp_path / "out"), "wer") == wer
    per_speaker = (tmp_path / "out" / "score_wer" / "per_speaker.tsv").read_text().splitlines()
    assert per_speaker[1:] == ["a\t2\t4\t75.00", "b\t1\t2\t0.00"]
    assert (tmp_path / "out" / "score_wer" / "hyp.trn").read_text().splitlines()[0] == "HELLO WORD\t(a-a-1)"
    cer_reference = (tmp_path / "out" / "score_cer" / "ref.trn").read_text().splitlines()
    assert cer_reference[2] == "S E V E N _ T H I R T Y\t(b-b-1)"
    assert "id: a-1" in (tmp_path / "out" / "score_wer" / "alignments.txt").read_text()
    assert json.loads((tmp_path / "out" / "score_cer" / "counts.json").read_text())["sentences"] == 3


def test_missing_hypothesis_file_is_named(tmp_path):
    (tmp_path / "text").write_text("a-1 HI\n")
    (tmp_path / "utt2spk").write_text("a-1 a\n")
    with pytest.raises(FileNotFoundError, match="hyp not found: run the decoding stage first"):
        score_directory(str(tmp_path / "text"), str(tmp_path / "hyp"), str(tmp_path / "utt2spk"), str(tmp_path))
