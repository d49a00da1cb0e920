"""Text for the language model of ``egs/mini/asr1``: the training transcripts plus more sentences of the grammar.

ESPnet's ``asr.sh`` trains its LM on ``--lm_train_text``, which LibriSpeech recipes make from the training
transcripts and a separate text corpus many times their size. The mini recipe's counterpart of that corpus is more
sentences of the same training grammar, without audio: :data:`hybrid_encoders.recipes.grammar.LM_TEXT_SPLIT`, drawn
by :func:`~hybrid_encoders.recipes.grammar.generate_splits` after the corpus's own splits, so that none of its
sentences is a dev or test sentence (nor a training one) and the corpus is the same with or without it. The
held-out structures of ``dev_other`` / ``test_other`` stay unseen by the LM.

Command line (used by ``egs/mini/asr1`` stage 3)::

    python -m hybrid_encoders.recipes.lm_text --train_text data/train/text --output exp/lm_stats_char/lm_train.txt \\
        --corpus_size 1800 --seed 0 --sentences 5472
"""

import argparse
import os
import sys
from typing import List, Sequence

from hybrid_encoders.recipes.grammar import LM_TEXT_SPLIT, generate_splits, normalize_transcript
from hybrid_encoders.recipes.synthetic_speech import split_sizes


def lm_text_sentences(corpus_size: int, seed: int, count: int) -> List[str]:
    """``count`` reference-form sentences of the training grammar that no split of the corpus contains.

    Args:
        corpus_size: the corpus's ``--corpus_size``.
        seed: the corpus's ``--seed``.
        count: number of sentences (>= 0).

    Returns:
        Upper-case sentences (:func:`~hybrid_encoders.recipes.grammar.normalize_transcript`), all distinct.
    """
    if count < 0:
        raise ValueError(f"--sentences must be >= 0, got {count}")
    splits = generate_splits(dict(split_sizes(corpus_size), **{LM_TEXT_SPLIT: count}), seed)
    return [normalize_transcript(sentence) for _, sentence in splits[LM_TEXT_SPLIT]]


def write_lm_text(train_text: str, output: str, corpus_size: int, seed: int, count: int) -> int:
    """Write ``output``: the Kaldi text file ``train_text`` followed by :func:`lm_text_sentences` (ids
    ``lm_text000000``, ...). Returns the number of lines written."""
    if not os.path.isfile(train_text):
        raise FileNotFoundError(f"--train_text {train_text} does not exist (run stage 1 first)")
    with open(train_text, encoding="utf-8") as source:
        lines = [line.rstrip("\n") for line in source if line.strip()]
    lines += [f"{LM_TEXT_SPLIT}{index:06d} {sentence}"
              for index, sentence in enumerate(lm_text_sentences(corpus_size, seed, count))]
    with open(output, "w", encoding="utf-8") as target:
        target.writelines(line + "\n" for line in lines)
    return len(lines)


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description="Write the LM training text of egs/mini/asr1.")
    parser.add_argument("--train_text", required=True, help="the training transcripts (Kaldi text file)")
    parser.add_argument("--output", required=True, help="the LM training text to write (Kaldi text file)")
    parser.add_argument("--corpus_size", type=int, default=1800, help="the corpus's --corpus_size")
    parser.add_argument("--seed", type=int, default=0, help="the corpus's --seed")
    parser.add_argument("--sentences", type=int, required=True, help="grammar sentences added to the transcripts")
    args = parser.parse_args(argv)
    try:
        lines = write_lm_text(args.train_text, args.output, args.corpus_size, args.seed, args.sentences)
    except (OSError, ValueError) as error:
        parser.error(str(error))  # exits with status 2, the message on stderr
    print(f"{args.output}: {lines} sentences")
    return 0


if __name__ == "__main__":
    sys.exit(main())
