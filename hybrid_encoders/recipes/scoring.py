"""Word and character error rates with per-utterance alignments, the recipe's version of ``asr.sh`` stage 13.

Error counts come from ``jiwer`` (Levenshtein alignment). The character error rate treats the space between words as
a character, as ESPnet's ``<space>`` token does. sclite's ``trn`` files are always written; when the ``sclite``
program is on ``PATH`` its full report goes to ``result.txt`` next to them.

Command line::

    python -m hybrid_encoders.recipes.scoring --ref data/test/text --hyp exp/.../test/text \\
        --utt2spk data/test/utt2spk --output_dir exp/.../test
"""

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence, Tuple

from hybrid_encoders.recipes.kaldi_dir import read_table

LOG = logging.getLogger(__name__)
UNITS = ("wer", "cer")


@dataclass
class ErrorCounts:
    """sclite-style totals of one scoring unit (words or characters).

    Attributes:
        sentences: number of utterances.
        reference_length: reference tokens.
        correct, substitutions, deletions, insertions: alignment operation counts.
        sentence_errors: utterances with at least one error.
    """

    sentences: int = 0
    reference_length: int = 0
    correct: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    sentence_errors: int = 0

    @property
    def error_rate(self) -> float:
        """(S + D + I) / N in percent."""
        errors = self.substitutions + self.deletions + self.insertions
        return 100.0 * errors / max(self.reference_length, 1)

    def add(self, other: "ErrorCounts") -> None:
        """Accumulate ``other`` into ``self``."""
        for field in asdict(self):
            setattr(self, field, getattr(self, field) + getattr(other, field))


def align(reference: str, hypothesis: str, unit: str) -> Tuple[ErrorCounts, str]:
    """Align one utterance.

    Args:
        reference: normalised reference transcript.
        hypothesis: recognised transcript (may be empty).
        unit: ``wer`` (words) or ``cer`` (characters, the space included).

    Returns:
        ``(counts, alignment)`` where ``alignment`` is jiwer's REF/HYP/operation text block.
    """
    import jiwer

    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if not reference.strip():
        raise ValueError("empty reference transcript: scoring needs at least one reference token")
    process = jiwer.process_words if unit == "wer" else jiwer.process_characters
    output = process(reference, hypothesis)
    counts = ErrorCounts(sentences=1, correct=output.hits, substitutions=output.substitutions,
                         deletions=output.deletions, insertions=output.insertions)
    counts.reference_length = counts.correct + counts.substitutions + counts.deletions
    counts.sentence_errors = int(counts.substitutions + counts.deletions + counts.insertions > 0)
    alignment = jiwer.visualize_alignment(output, show_measures=False).split("\n", 2)[-1].strip("\n")
    return counts, alignment


def score_directory(ref_file: str, hyp_file: str, utt2spk_file: str, output_dir: str) -> Dict[str, ErrorCounts]:
    """Score a decoding against a Kaldi ``text`` file and write ``score_wer/`` and ``score_cer/``.

    Each ``score_<unit>/`` gets ``ref.trn`` and ``hyp.trn`` (sclite format, ``(speaker-utt)`` ids),
    ``alignments.txt`` (one block per utterance, with its errors), ``per_speaker.tsv``, ``counts.json`` and, when
    sclite is installed, ``result.txt``. Utterances missing from ``hyp_file`` are scored as empty output, with a
    warning.

    Returns:
        ``{"wer": totals, "cer": totals}``.
    """
    for path in (ref_file, hyp_file, utt2spk_file):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: run the decoding stage first")
    references, hypotheses, speakers = read_table(ref_file), read_table(hyp_file), read_table(utt2spk_file)
    missing = sorted(set(references) - set(hypotheses))
    if missing:
        LOG.warning("%s: %d utterances have no hypothesis (scored as empty), e.g. %s", hyp_file, len(missing),
                    missing[0])
    totals = {}
    for unit in UNITS:
        unit_dir = os.path.join(output_dir, f"score_{unit}")
        os.makedirs(unit_dir, exist_ok=True)
        total, per_speaker, blocks = ErrorCounts(), {}, []
        for utt_id, reference in sorted(references.items()):
            hypothesis = hypotheses.get(utt_id, "")
            counts, alignment = align(reference, hypothesis, unit)
            total.add(counts)
            per_speaker.setdefault(speakers.get(utt_id, "unknown"), ErrorCounts()).add(counts)
            blocks.append(f"id: {utt_id}\nerrors: {counts.substitutions} sub, {counts.deletions} del, "
                          f"{counts.insertions} ins / {counts.reference_length}\n{alignment}\n")
        _write_trn(os.path.join(unit_dir, "ref.trn"), references, speakers, unit)
        _write_trn(os.path.join(unit_dir, "hyp.trn"), {u: hypotheses.get(u, "") for u in references}, speakers, unit)
        with open(os.path.join(unit_dir, "alignments.txt"), "w", encoding="utf-8") as stream:
            stream.write("\n".join(blocks))
        with open(os.path.join(unit_dir, "per_speaker.tsv"), "w", encoding="utf-8") as stream:
            stream.write(f"speaker\tsentences\treference_length\t{unit}\n")
            for speaker, counts in sorted(per_speaker.items()):
                stream.write(f"{speaker}\t{counts.sentences}\t{counts.reference_length}\t{counts.error_rate:.2f}\n")
        with open(os.path.join(unit_dir, "counts.json"), "w", encoding="utf-8") as stream:
            json.dump(dict(asdict(total), error_rate=total.error_rate), stream, indent=1)
        _run_sclite(unit_dir)
        totals[unit] = total
    return totals


def load_counts(output_dir: str, unit: str) -> ErrorCounts:
    """Read back ``score_<unit>/counts.json`` written by :func:`score_directory`."""
    with open(os.path.join(output_dir, f"score_{unit}", "counts.json"), encoding="utf-8") as stream:
        data = json.load(stream)
    data.pop("error_rate")
    return ErrorCounts(**data)


def _write_trn(path: str, texts: Dict[str, str], speakers: Dict[str, str], unit: str) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        for utt_id in sorted(texts):
            tokens = texts[utt_id].split() if unit == "wer" else list(texts[utt_id].replace(" ", "_"))
            stream.write(f"{' '.join(tokens)}\t({speakers.get(utt_id, 'unknown')}-{utt_id})\n")


def _run_sclite(unit_dir: str) -> None:
    sclite = shutil.which("sclite")
    if not sclite:
        return
    with open(os.path.join(unit_dir, "result.txt"), "w", encoding="utf-8") as stream:
        subprocess.run([sclite, "-r", os.path.join(unit_dir, "ref.trn"), "trn", "-h", os.path.join(unit_dir, "hyp.trn"),
                        "trn", "-i", "rm", "-o", "all", "stdout"], stdout=stream, check=False)


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description="Score a decoding: WER and CER with per-utterance alignments.")
    parser.add_argument("--ref", required=True, help="Kaldi text file of the references")
    parser.add_argument("--hyp", required=True, help="Kaldi text file of the hypotheses (1best_recog/text)")
    parser.add_argument("--utt2spk", required=True)
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        totals = score_directory(args.ref, args.hyp, args.utt2spk, args.output_dir)
    except (FileNotFoundError, ValueError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    summary: List[str] = [f"{unit.upper()} {totals[unit].error_rate:.2f}% ({totals[unit].reference_length} ref tokens)"
                          for unit in UNITS]
    print(f"{args.output_dir}: " + ", ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
