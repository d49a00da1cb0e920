"""Sentencepiece BPE model and ESPnet token list, as ``asr.sh`` stage 5 builds them, through the Python API.

``asr.sh`` calls the ``spm_train`` program, which the ``sentencepiece`` wheel does not install; this module trains
the same model with ``sentencepiece.SentencePieceTrainer`` and writes ``tokens.txt`` in ESPnet's order: ``<blank>``,
``<unk>``, the pieces (without sentencepiece's own ``<unk>``, ``<s>``, ``</s>``), ``<sos/eos>``.

Command line::

    python -m hybrid_encoders.recipes.bpe --text data/train/text --nbpe 256 --output_dir data/token_list/bpe256
"""

import argparse
import os
import sys
from typing import List, Sequence

from hybrid_encoders.recipes.kaldi_dir import read_table


def train_bpe(text_file: str, output_dir: str, vocab_size: int, model_type: str = "unigram",
              character_coverage: float = 1.0) -> List[str]:
    """Train ``<output_dir>/bpe.model`` on the transcripts of a Kaldi ``text`` file and write ``tokens.txt``.

    Args:
        text_file: Kaldi ``text`` (``<utt_id> <transcript>`` per line).
        output_dir: receives ``train.txt``, ``bpe.model``, ``bpe.vocab`` and ``tokens.txt``.
        vocab_size: sentencepiece vocabulary size (``--nbpe`` of ``asr.sh``).
        model_type: ``unigram`` (ESPnet's default ``bpemode``) or ``bpe``.
        character_coverage: share of characters the model must cover.

    Returns:
        The ESPnet token list written to ``tokens.txt``.

    Raises:
        FileNotFoundError: ``text_file`` is missing.
        ValueError: the vocabulary is too large for the text (sentencepiece's message, with the option name).
    """
    import sentencepiece

    if not os.path.isfile(text_file):
        raise FileNotFoundError(f"{text_file} not found: run the data preparation stage first")
    os.makedirs(output_dir, exist_ok=True)
    train_txt = os.path.join(output_dir, "train.txt")
    with open(train_txt, "w", encoding="utf-8") as stream:
        for transcript in read_table(text_file).values():
            stream.write(transcript + "\n")
    prefix = os.path.join(output_dir, "bpe")
    try:
        sentencepiece.SentencePieceTrainer.train(
            input=train_txt, vocab_size=vocab_size, model_type=model_type, model_prefix=prefix,
            character_coverage=character_coverage, input_sentence_size=100_000_000, minloglevel=2)
    except RuntimeError as error:
        raise ValueError(f"--nbpe {vocab_size}: sentencepiece failed: {error}") from error
    processor = sentencepiece.SentencePieceProcessor(model_file=prefix + ".model")
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    reserved = {"<unk>", "<s>", "</s>"}
    tokens = ["<blank>", "<unk>"] + [piece for piece in pieces if piece not in reserved] + ["<sos/eos>"]
    with open(os.path.join(output_dir, "tokens.txt"), "w", encoding="utf-8") as stream:
        stream.write("\n".join(tokens) + "\n")
    return tokens


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description="Train a sentencepiece model and write ESPnet's tokens.txt.")
    parser.add_argument("--text", required=True, help="Kaldi text file of the training set")
    parser.add_argument("--nbpe", type=int, required=True, help="vocabulary size")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--bpemode", default="unigram", choices=("unigram", "bpe"))
    args = parser.parse_args(argv)
    try:
        tokens = train_bpe(args.text, args.output_dir, args.nbpe, args.bpemode)
    except (FileNotFoundError, ValueError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    print(f"{os.path.join(args.output_dir, 'tokens.txt')}: {len(tokens)} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
