"""Kaldi-style data directories (``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``) as ESPnet's ``asr.sh`` expects.

Command line: ``python -m hybrid_encoders.recipes.kaldi_dir check data/train [data/dev ...]`` drops every utterance
whose audio file is missing, empty or unreadable, with a warning naming the file, so that training never meets it.
"""

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence

import soundfile

LOG = logging.getLogger(__name__)
FILES = ("wav.scp", "text", "utt2spk", "spk2utt")


@dataclass(frozen=True)
class Utterance:
    """One row of a data directory.

    Attributes:
        utt_id: utterance id; starts with ``speaker`` so that Kaldi's sorting rules hold.
        wav_path: path of a WAV/FLAC file (ESPnet's ``sound`` type).
        text: normalised transcript.
        speaker: speaker id.
    """

    utt_id: str
    wav_path: str
    text: str
    speaker: str


def write_data_dir(directory: str, utterances: Iterable[Utterance]) -> None:
    """Write ``wav.scp``, ``text``, ``utt2spk`` and ``spk2utt`` sorted by id (C locale order, as Kaldi needs)."""
    rows = sorted(utterances, key=lambda u: u.utt_id)
    ids = [u.utt_id for u in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{directory}: duplicate utterance ids")
    for utterance in rows:
        if not utterance.utt_id.startswith(utterance.speaker):
            raise ValueError(f"{directory}: utterance id {utterance.utt_id!r} must start with its speaker id "
                             f"{utterance.speaker!r} (Kaldi sorting rule)")
        if any(c.isspace() for c in utterance.utt_id + utterance.speaker + utterance.wav_path):
            raise ValueError(f"{directory}: whitespace in id or path of {utterance.utt_id!r}")
    os.makedirs(directory, exist_ok=True)
    speakers: Dict[str, List[str]] = {}
    for utterance in rows:
        speakers.setdefault(utterance.speaker, []).append(utterance.utt_id)
    _write_lines(os.path.join(directory, "wav.scp"), (f"{u.utt_id} {u.wav_path}" for u in rows))
    _write_lines(os.path.join(directory, "text"), (f"{u.utt_id} {u.text}" for u in rows))
    _write_lines(os.path.join(directory, "utt2spk"), (f"{u.utt_id} {u.speaker}" for u in rows))
    _write_lines(os.path.join(directory, "spk2utt"),
                 (f"{speaker} {' '.join(utts)}" for speaker, utts in sorted(speakers.items())))


def read_data_dir(directory: str) -> List[Utterance]:
    """Read the rows of a data directory written by :func:`write_data_dir` (or by Kaldi / ESPnet scripts).

    Raises:
        FileNotFoundError: a required file is missing; the message names it.
        ValueError: ``text`` or ``utt2spk`` lacks an utterance of ``wav.scp``.
    """
    tables = {}
    for name in ("wav.scp", "text", "utt2spk"):
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: is {directory} a Kaldi data directory? "
                                    "Run the data preparation stage first.")
        tables[name] = read_table(path)
    rows = []
    for utt_id, wav_path in tables["wav.scp"].items():
        for name in ("text", "utt2spk"):
            if utt_id not in tables[name]:
                raise ValueError(f"{os.path.join(directory, name)} has no entry for utterance {utt_id}")
        rows.append(Utterance(utt_id, wav_path, tables["text"][utt_id], tables["utt2spk"][utt_id]))
    return rows


def read_table(path: str) -> Dict[str, str]:
    """``{first field: rest of line}`` of a Kaldi table file (the rest may be empty)."""
    table = {}
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            key, _, value = line.rstrip("\n").partition(" ")
            if key:
                table[key] = value.strip()
    return table


def audio_problem(path: str) -> str:
    """Why ``path`` cannot be used as training audio, or ``""`` when it can.

    The whole file is decoded, so a valid header in front of truncated or garbage data is caught here rather than
    by a data-loader worker in the middle of training.
    """
    if not os.path.isfile(path):
        return "file not found"
    if os.path.getsize(path) == 0:
        return "empty file"
    try:
        samples, _ = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        return f"unreadable audio ({error})"
    if samples.shape[0] == 0:
        return "no samples"
    return ""


def drop_unreadable_audio(directory: str) -> List[str]:
    """Remove utterances whose audio is missing, empty or corrupt from a data directory, in place.

    Each dropped file is logged as a warning with its path and the reason. Piped ``wav.scp`` entries (ending in
    ``|``) are kept unchecked.

    Returns:
        The dropped utterance ids.
    """
    rows = read_data_dir(directory)
    kept, dropped = [], []
    for utterance in rows:
        problem = "" if utterance.wav_path.endswith("|") else audio_problem(utterance.wav_path)
        if problem:
            LOG.warning("%s: skipping utterance %s, audio file %s: %s", directory, utterance.utt_id,
                        utterance.wav_path, problem)
            dropped.append(utterance.utt_id)
        else:
            kept.append(utterance)
    if dropped:
        if not kept:
            raise ValueError(f"{directory}: no readable audio left (all {len(rows)} files are bad)")
        write_data_dir(directory, kept)
    return dropped


def _write_lines(path: str, lines: Iterable[str]) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        for line in lines:
            stream.write(line + "\n")


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="drop utterances with missing, empty or corrupt audio")
    check.add_argument("data_dirs", nargs="+")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    for directory in args.data_dirs:
        try:
            dropped = drop_unreadable_audio(directory)
        except (FileNotFoundError, ValueError) as error:
            print(f"ERROR: {error}", file=sys.stderr)
            return 1
        LOG.info("%s: %d utterances dropped", directory, len(dropped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
