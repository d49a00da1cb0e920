"""The LM text of the mini recipe: grammar sentences disjoint from the corpus, after the training transcripts."""

import re

import pytest

from hybrid_encoders.recipes import grammar, lm_text
from hybrid_encoders.recipes.synthetic_speech import split_sizes


def test_lm_sentences_are_new_training_grammar_sentences():
    sizes = split_sizes(1800)
    corpus = grammar.generate_splits(sizes, seed=0)
    sentences = lm_text.lm_text_sentences(1800, 0, 600)
    assert len(sentences) == len(set(sentences)) == 600
    assert sentences == lm_text.lm_text_sentences(1800, 0, 600)
    assert sentences != lm_text.lm_text_sentences(1800, 1, 600)
    corpus_sentences = {grammar.normalize_transcript(sentence) for rows in corpus.values() for _, sentence in rows}
    assert not set(sentences) & corpus_sentences
    signatures = [re.compile(structure.signature, re.IGNORECASE) for structure in
                  grammar.HELD_OUT_STRUCTURES.values()]
    assert not [sentence for sentence in sentences if any(s.search(sentence) for s in signatures)]
    # Drawn last, the LM text leaves every split of the corpus as it was.
    assert {split: rows for split, rows in grammar.generate_splits(dict(sizes, lm_text=600), seed=0).items()
            if split != grammar.LM_TEXT_SPLIT} == corpus


def test_write_lm_text_puts_the_transcripts_first(tmp_path):
    train_text = tmp_path / "text"
    train_text.write_text("spk-train000000 WAKE ME UP AT TEN\nspk-train000001 HELLO\n")
    output = tmp_path / "lm_train.txt"
    assert lm_text.write_lm_text(str(train_text), str(output), 1800, 0, 5) == 7
    lines = output.read_text().splitlines()
    assert lines[:2] == train_text.read_text().splitlines()
    assert [line.split(" ", 1) for line in lines[2:]] == [
        [f"lm_text{index:06d}", sentence] for index, sentence in enumerate(lm_text.lm_text_sentences(1800, 0, 5))]
    assert lm_text.write_lm_text(str(train_text), str(output), 1800, 0, 0) == 2


def test_bad_arguments_are_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="--sentences must be >= 0, got -1"):
        lm_text.lm_text_sentences(1800, 0, -1)
    missing = tmp_path / "missing"
    with pytest.raises(SystemExit) as exit_info:
        lm_text.main(["--train_text", str(missing), "--output", str(tmp_path / "out"), "--sentences", "3"])
    assert exit_info.value.code == 2
    assert f"--train_text {missing} does not exist (run stage 1 first)" in capsys.readouterr().err
