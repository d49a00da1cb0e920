"""Sentencepiece model and ESPnet token list (asr.sh stage 5 order)."""

import pytest

from hybrid_encoders.recipes.bpe import train_bpe
from hybrid_encoders.recipes.grammar import generate_sentences, normalize_transcript

sentencepiece = pytest.importorskip("sentencepiece")


def test_token_list_order_and_round_trip(tmp_path):
    text = tmp_path / "text"
    text.write_text("".join(f"u-{i} {normalize_transcript(s)}\n" for i, s in enumerate(generate_sentences(300, 0))))
    tokens = train_bpe(str(text), str(tmp_path / "bpe"), vocab_size=60)
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    assert len(tokens) == 60 and len(set(tokens)) == 60
    assert (tmp_path / "bpe" / "tokens.txt").read_text().split("\n")[:-1] == tokens
    processor = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "bpe" / "bpe.model"))
    pieces = processor.encode("SET AN ALARM FOR SEVEN", out_type=str)
    assert set(pieces) <= set(tokens)
    assert processor.decode(pieces) == "SET AN ALARM FOR SEVEN"


def test_vocabulary_too_large_names_the_option(tmp_path):
    text = tmp_path / "text"
    text.write_text("u-1 HELLO WORLD\n")
    with pytest.raises(ValueError, match="--nbpe 500"):
        train_bpe(str(text), str(tmp_path / "bpe"), vocab_size=500)


def test_missing_text_says_which_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the data preparation stage first"):
        train_bpe(str(tmp_path / "text"), str(tmp_path / "bpe"), vocab_size=10)
