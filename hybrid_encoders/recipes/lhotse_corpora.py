"""LibriSpeech and AISHELL-1 as Kaldi data directories, through lhotse's download and prepare recipes.

``local/data.sh`` of ``egs/librispeech/asr1`` and ``egs/aishell/asr1`` call this module. lhotse downloads resumably
(partial archives are continued, finished parts are marked ``.completed`` and skipped) and writes its manifests to
``<data_dir>/manifests``; this module turns each part into the ``wav.scp``/``text``/``utt2spk``/``spk2utt``
directory ``asr.sh`` expects (``wav.scp`` names the FLAC/WAV files directly: ESPnet reads them with soundfile) and
drops utterances whose audio is empty or corrupt, with a warning naming the file.

Command line::

    python -m hybrid_encoders.recipes.lhotse_corpora librispeech --corpus_root /data/librispeech --data_dir data
    python -m hybrid_encoders.recipes.lhotse_corpora aishell --corpus_root /data/aishell --data_dir data
"""

import argparse
import logging
import os
import sys
from typing import Dict, List, Sequence

from hybrid_encoders.recipes.kaldi_dir import Utterance, drop_unreadable_audio, read_data_dir, write_data_dir

LOG = logging.getLogger(__name__)

LIBRISPEECH_PARTS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other", "test-clean",
                     "test-other")
# Kaldi directories made by joining parts, as ESPnet's egs2/librispeech/asr1 names them.
LIBRISPEECH_COMBINED = {
    "train_960": ("train_clean_100", "train_clean_360", "train_other_500"),
    "dev": ("dev_clean", "dev_other"),
}


def manifests_to_utterances(recordings, supervisions) -> List[Utterance]:
    """Rows of a Kaldi directory from lhotse manifests with one whole-recording supervision per recording.

    Utterance ids get the speaker id as prefix when they lack it (Kaldi's sorting rule), e.g. AISHELL's
    ``BAC009S0002W0122`` of speaker ``S0002`` becomes ``S0002-BAC009S0002W0122``.

    Raises:
        ValueError: a recording is not a single file, or a supervision covers only part of its recording.
    """
    rows = []
    for supervision in supervisions:
        recording = recordings[supervision.recording_id]
        if len(recording.sources) != 1 or recording.sources[0].type != "file":
            raise ValueError(f"recording {recording.id}: only single-file recordings are supported")
        if supervision.start != 0 or abs(supervision.duration - recording.duration) > 1e-3:
            raise ValueError(f"supervision {supervision.id} covers part of recording {recording.id}; "
                             "segmented corpora are not supported")
        speaker = supervision.speaker or recording.id
        utt_id = supervision.id if supervision.id.startswith(speaker) else f"{speaker}-{supervision.id}"
        rows.append(Utterance(utt_id, os.path.abspath(recording.sources[0].source), supervision.text.strip(), speaker))
    return rows


def _write_parts(manifests: Dict[str, dict], data_dir: str) -> List[str]:
    written = []
    for part, manifest in sorted(manifests.items()):
        directory = os.path.join(data_dir, part.replace("-", "_"))
        write_data_dir(directory, manifests_to_utterances(manifest["recordings"], manifest["supervisions"]))
        dropped = drop_unreadable_audio(directory)
        LOG.info("%s: %d utterances (%d dropped)", directory, len(read_data_dir(directory)), len(dropped))
        written.append(os.path.basename(directory))
    return written


def _require_corpus(corpus_dir: str, variable: str, download: bool) -> None:
    if not os.path.isdir(corpus_dir):
        hint = "the download did not produce it" if download else "run local/data.sh with --download true"
        raise FileNotFoundError(f"{corpus_dir} not found ({hint}); {variable} in db.sh must name the directory that "
                                f"holds (or will receive) the corpus")


def prepare_librispeech_dirs(corpus_root: str, data_dir: str, parts: Sequence[str] = LIBRISPEECH_PARTS,
                             download: bool = True, nj: int = 4) -> List[str]:
    """Download (optionally) and prepare LibriSpeech parts; also write ``train_960`` and ``dev`` when complete.

    Args:
        corpus_root: ``$LIBRISPEECH`` of ``db.sh``; the corpus is (or gets) extracted to ``<corpus_root>/LibriSpeech``.
        data_dir: receives ``<part>/`` Kaldi directories (``-`` becomes ``_``) and ``manifests/``.
        parts: LibriSpeech parts, e.g. ``("dev-clean", "test-clean")``.
        download: fetch missing parts from openslr.org first (resumable).
        nj: parallel jobs of lhotse's preparation.

    Returns:
        Names of the Kaldi directories written.
    """
    from lhotse.recipes import download_librispeech, prepare_librispeech

    unknown = sorted(set(parts) - set(LIBRISPEECH_PARTS))
    if unknown:
        raise ValueError(f"--parts: unknown LibriSpeech parts {unknown}; choose from {list(LIBRISPEECH_PARTS)}")
    if download:
        download_librispeech(corpus_root, dataset_parts=list(parts))
    corpus_dir = os.path.join(corpus_root, "LibriSpeech")
    _require_corpus(corpus_dir, "LIBRISPEECH", download)
    missing = [part for part in parts if not os.path.isdir(os.path.join(corpus_dir, part))]
    if missing:
        raise FileNotFoundError(f"{corpus_dir} lacks {missing}: run local/data.sh with --download true")
    manifests = prepare_librispeech(corpus_dir, dataset_parts=list(parts),
                                    output_dir=os.path.join(data_dir, "manifests"), num_jobs=nj)
    written = _write_parts(manifests, data_dir)
    for combined, members in LIBRISPEECH_COMBINED.items():
        if all(member in written for member in members):
            rows = [row for member in members for row in read_data_dir(os.path.join(data_dir, member))]
            write_data_dir(os.path.join(data_dir, combined), rows)
            written.append(combined)
    return written


def prepare_aishell_dirs(corpus_root: str, data_dir: str, download: bool = True) -> List[str]:
    """Download (optionally) and prepare AISHELL-1 ``train``, ``dev`` and ``test`` (text without spaces: char units).

    Args:
        corpus_root: ``$AISHELL`` of ``db.sh``; the corpus is (or gets) extracted to ``<corpus_root>/aishell``.
        data_dir: receives ``train/``, ``dev/``, ``test/`` and ``manifests/``.
        download: fetch the archives from openslr.org first (resumable).

    Returns:
        Names of the Kaldi directories written.
    """
    from lhotse.recipes import download_aishell, prepare_aishell

    if download:
        download_aishell(corpus_root)
    corpus_dir = os.path.join(corpus_root, "aishell")
    _require_corpus(corpus_dir, "AISHELL", download)
    transcript = os.path.join(corpus_dir, "data_aishell", "transcript", "aishell_transcript_v0.8.txt")
    if not os.path.isfile(transcript):
        raise FileNotFoundError(f"{transcript} not found: {corpus_dir} is incomplete; run local/data.sh with "
                                "--download true")
    manifests = prepare_aishell(corpus_dir, output_dir=os.path.join(data_dir, "manifests"))
    return _write_parts(manifests, data_dir)


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description="Prepare LibriSpeech or AISHELL-1 Kaldi directories with lhotse.")
    parser.add_argument("corpus", choices=("librispeech", "aishell"))
    parser.add_argument("--corpus_root", required=True, help="$LIBRISPEECH or $AISHELL from db.sh")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--download", choices=("true", "false"), default="true")
    parser.add_argument("--parts", nargs="+", default=list(LIBRISPEECH_PARTS), help="LibriSpeech parts")
    parser.add_argument("--nj", type=int, default=4)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    if not args.corpus_root:
        print(f"ERROR: {args.corpus.upper()} is empty in db.sh: set it to the directory that holds (or will receive) "
              "the corpus", file=sys.stderr)
        return 1
    try:
        if args.corpus == "librispeech":
            written = prepare_librispeech_dirs(args.corpus_root, args.data_dir, args.parts, args.download == "true",
                                               args.nj)
        else:
            written = prepare_aishell_dirs(args.corpus_root, args.data_dir, args.download == "true")
    except (FileNotFoundError, ValueError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    LOG.info("wrote %s", ", ".join(os.path.join(args.data_dir, name) for name in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
