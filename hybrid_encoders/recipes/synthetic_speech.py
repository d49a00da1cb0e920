"""A synthetic English speech corpus made with eSpeak NG, for the laptop recipe ``egs/mini/asr1``.

Speakers are eSpeak NG voice variants (``m1``, ``f3``, ``klatt2``, ...). Every utterance draws an English accent
(``en-us``, ``en-gb-scotland``, ...), a speaking rate and a pitch around its speaker's own, then gets a random gain,
leading/trailing silence and additive noise (white plus low-pass "rumble") at a random SNR. The test and dev speakers
are variants that never occur in training, so the test WER measures generalisation to unseen voices. The sentences
come from :func:`hybrid_encoders.recipes.grammar.generate_splits`: no sentence occurs in two splits, and
``dev_other`` / ``test_other`` (spoken by the dev / test voices) use sentence structures and some words that the
training grammar never produces, so their WER measures generalisation to unseen text as well.

Everything is a function of ``seed`` (sentences, speaker parameters, noise), so the same seed and eSpeak NG version
give byte-identical WAV files. Files that already exist are kept, which makes the synthesis resumable.

Command line (used by ``egs/mini/asr1`` stage 1)::

    python -m hybrid_encoders.recipes.synthetic_speech --data_dir data --audio_dir data/audio --corpus_size 1800
"""

import argparse
import logging
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import soundfile
from scipy.signal import lfilter, resample_poly

from hybrid_encoders.recipes.espeak import open_synthesizer
from hybrid_encoders.recipes.grammar import generate_splits, normalize_transcript
from hybrid_encoders.recipes.kaldi_dir import Utterance, drop_unreadable_audio, write_data_dir

LOG = logging.getLogger(__name__)

SAMPLE_RATE = 16000
ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
# Speakers per split. Training voices are never heard in dev or test; the *_other sets share the voices of dev / test.
TEST_SPEAKERS = ("m7", "f5", "klatt2", "Michael")
DEV_SPEAKERS = ("m6", "f4")
SPEAKERS: Dict[str, Tuple[str, ...]] = {
    "train": ("m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "klatt", "klatt3", "Andy", "Annie", "Alex", "Lee",
              "Mike", "steph"),
    "dev": DEV_SPEAKERS,
    "dev_other": DEV_SPEAKERS,
    "test": TEST_SPEAKERS,
    "test_other": TEST_SPEAKERS,
}
# Share of ``corpus_size`` given to each split.
SPLIT_FRACTIONS = {"train": 0.76, "dev": 0.05, "dev_other": 0.04, "test": 0.075, "test_other": 0.075}
SNR_RANGE_DB = (20.0, 35.0)
RATE_RANGE_WPM = (130, 210)
PITCH_RANGE = (25, 75)


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything needed to render one utterance deterministically.

    Attributes:
        utt_id: ``<speaker>-<split><index>``.
        split: a key of :data:`SPEAKERS`.
        speaker: eSpeak NG voice variant.
        voice: full eSpeak NG voice name, ``<accent>+<speaker>``.
        text: spoken-form sentence (lower case words).
        structure: name of the grammar structure that made ``text``.
        rate: words per minute.
        pitch: eSpeak NG pitch, [0, 99].
        snr_db: signal-to-noise ratio of the added noise.
        gain: peak amplitude of the clean speech, in (0, 1).
        noise_seed: seed of the noise and silence padding.
    """

    utt_id: str
    split: str
    speaker: str
    voice: str
    text: str
    structure: str
    rate: int
    pitch: int
    snr_db: float
    gain: float
    noise_seed: int


def split_sizes(corpus_size: int) -> Dict[str, int]:
    """Number of utterances per split for a total of ``corpus_size`` (each split gets at least one per speaker)."""
    minimum = sum(len(s) for s in SPEAKERS.values())
    if corpus_size < minimum:
        raise ValueError(f"--corpus_size must be at least {minimum} (one utterance per speaker of each split), "
                         f"got {corpus_size}")
    sizes = {split: max(len(SPEAKERS[split]), int(round(corpus_size * SPLIT_FRACTIONS[split])))
             for split in SPEAKERS if split != "train"}
    return {"train": corpus_size - sum(sizes.values()), **sizes}


def plan_corpus(corpus_size: int, seed: int) -> List[UtteranceSpec]:
    """Draw the specification of every utterance of the corpus.

    Args:
        corpus_size: total number of utterances over train, dev and test.
        seed: master seed; the plan is a pure function of ``(corpus_size, seed)``.

    Returns:
        Specs in split order (train, dev, dev_other, test, test_other); speakers take turns within a split.
    """
    rng = np.random.default_rng(seed)
    sizes = split_sizes(corpus_size)
    sentences = generate_splits(sizes, seed)
    speakers_in_order = dict.fromkeys(speaker for split in SPEAKERS for speaker in SPEAKERS[split])
    voice_traits = {speaker: (int(rng.integers(150, 191)), int(rng.integers(35, 66))) for speaker in speakers_in_order}
    specs = []
    for split, size in sizes.items():
        speakers = SPEAKERS[split]
        for index in range(size):
            speaker = speakers[index % len(speakers)]
            base_rate, base_pitch = voice_traits[speaker]
            specs.append(UtteranceSpec(
                utt_id=f"{speaker}-{split}{index:06d}",
                split=split,
                speaker=speaker,
                voice=ACCENTS[int(rng.integers(len(ACCENTS)))] + "+" + speaker,
                structure=sentences[split][index][0],
                text=sentences[split][index][1],
                rate=int(np.clip(base_rate + rng.integers(-20, 21), *RATE_RANGE_WPM)),
                pitch=int(np.clip(base_pitch + rng.integers(-10, 11), *PITCH_RANGE)),
                snr_db=float(rng.uniform(*SNR_RANGE_DB)),
                gain=float(rng.uniform(0.3, 0.9)),
                noise_seed=int(rng.integers(2 ** 31)),
            ))
    return specs


def add_noise(speech: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white noise plus a one-pole low-pass "rumble" at ``snr_db`` relative to the speech power.

    Args:
        speech: (N,) float waveform.
        snr_db: target signal-to-noise ratio in dB.
        rng: generator of the noise.

    Returns:
        (N,) float waveform ``speech + noise``.
    """
    white = rng.standard_normal(speech.shape[0])
    rumble = lfilter([1.0], [1.0, -0.98], rng.standard_normal(speech.shape[0]))
    noise = white / np.std(white) + rng.uniform(0.0, 1.0) * rumble / max(np.std(rumble), 1e-12)
    speech_power = float(np.mean(speech ** 2))
    noise_power = float(np.mean(noise ** 2))
    scale = math.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return speech + scale * noise


def render(spec: UtteranceSpec, synthesizer) -> np.ndarray:
    """Synthesise, resample to 16 kHz, pad with 0-0.25 s of silence each side, scale and add noise.

    Returns:
        (N,) int16 waveform at :data:`SAMPLE_RATE`.
    """
    samples, rate = synthesizer.synthesize(spec.text, spec.voice, spec.rate, spec.pitch)
    if samples.size == 0:
        raise RuntimeError(f"eSpeak NG produced no audio for {spec.utt_id} ({spec.voice}: {spec.text!r})")
    divisor = math.gcd(SAMPLE_RATE, rate)
    speech = resample_poly(samples.astype(np.float64), SAMPLE_RATE // divisor, rate // divisor)
    speech *= spec.gain / max(float(np.max(np.abs(speech))), 1e-12)
    rng = np.random.default_rng(spec.noise_seed)
    pad = rng.integers(0, SAMPLE_RATE // 4, size=2)
    speech = np.concatenate([np.zeros(pad[0]), speech, np.zeros(pad[1])])
    noisy = add_noise(speech, spec.snr_db, rng)
    return np.round(np.clip(noisy, -1.0, 1.0) * 32767.0).astype(np.int16)


def wav_path(audio_dir: str, spec: UtteranceSpec) -> str:
    """Where the WAV file of ``spec`` lives: ``<audio_dir>/<split>/<utt_id>.wav``."""
    return os.path.join(audio_dir, spec.split, spec.utt_id + ".wav")


_worker_synthesizer = None


def _init_worker(backend: str) -> None:
    global _worker_synthesizer
    _worker_synthesizer = open_synthesizer(backend)


def _render_to_file(job: Tuple[UtteranceSpec, str]) -> str:
    spec, path = job
    audio = render(spec, _worker_synthesizer)
    # Write under a temporary name and rename, so an interrupted run never leaves a truncated file behind.
    partial = path + ".partial"
    soundfile.write(partial, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(partial, path)
    return path


def synthesize_corpus(specs: Sequence[UtteranceSpec], audio_dir: str, nj: int = 1, backend: str = "auto",
                      progress_every: int = 200) -> None:
    """Render every spec whose WAV file does not exist yet.

    Args:
        specs: output of :func:`plan_corpus`.
        audio_dir: root of the WAV files (see :func:`wav_path`).
        nj: worker processes; each loads its own eSpeak NG (its state is global to a process).
        backend: ``auto``, ``program`` or ``library`` (see :func:`hybrid_encoders.recipes.espeak.open_synthesizer`).
        progress_every: log a progress line every this many files.
    """
    jobs = [(spec, wav_path(audio_dir, spec)) for spec in specs if not os.path.isfile(wav_path(audio_dir, spec))]
    for split in {spec.split for spec, _ in jobs}:
        os.makedirs(os.path.join(audio_dir, split), exist_ok=True)
    LOG.info("synthesising %d of %d utterances into %s (%d job(s))", len(jobs), len(specs), audio_dir, nj)
    if not jobs:
        return
    start = time.perf_counter()
    if nj <= 1:
        _init_worker(backend)
        results = map(_render_to_file, jobs)
        pool = None
    else:
        pool = multiprocessing.get_context("spawn").Pool(nj, initializer=_init_worker, initargs=(backend,))
        results = pool.imap(_render_to_file, jobs, chunksize=16)
    try:
        for done, _ in enumerate(results, start=1):
            if done % progress_every == 0 or done == len(jobs):
                elapsed = time.perf_counter() - start
                LOG.info("  %d/%d files, %.0f s elapsed, ETA %.0f s", done, len(jobs), elapsed,
                         elapsed / done * (len(jobs) - done))
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def write_lhotse_manifests(specs: Sequence[UtteranceSpec], audio_dir: str, manifest_dir: str) -> None:
    """Write ``mini_recordings_<split>.jsonl.gz`` and ``mini_supervisions_<split>.jsonl.gz`` (lhotse format)."""
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    os.makedirs(manifest_dir, exist_ok=True)
    for split in SPEAKERS:
        recordings, supervisions = [], []
        for spec in specs:
            path = wav_path(audio_dir, spec)
            if spec.split != split or not os.path.isfile(path):
                continue
            recording = Recording.from_file(path, recording_id=spec.utt_id)
            recordings.append(recording)
            supervisions.append(SupervisionSegment(
                id=spec.utt_id, recording_id=spec.utt_id, start=0.0, duration=recording.duration, channel=0,
                text=normalize_transcript(spec.text), speaker=spec.speaker, language="English"))
        RecordingSet.from_recordings(recordings).to_file(
            os.path.join(manifest_dir, f"mini_recordings_{split}.jsonl.gz"))
        SupervisionSet.from_segments(supervisions).to_file(
            os.path.join(manifest_dir, f"mini_supervisions_{split}.jsonl.gz"))


def prepare_corpus(data_dir: str, audio_dir: str, corpus_size: int, seed: int, nj: int = 1,
                   backend: str = "auto") -> Dict[str, int]:
    """Synthesise the corpus; write a Kaldi directory per split (``<data_dir>/<split>``) and lhotse manifests.

    Utterances whose audio turns out missing, empty or corrupt are dropped with a warning naming the file.

    Returns:
        Number of utterances per split in the written data directories.
    """
    specs = plan_corpus(corpus_size, seed)
    synthesize_corpus(specs, audio_dir, nj=nj, backend=backend)
    counts = {}
    for split in SPEAKERS:
        directory = os.path.join(data_dir, split)
        rows = [Utterance(spec.utt_id, os.path.abspath(wav_path(audio_dir, spec)), normalize_transcript(spec.text),
                          spec.speaker) for spec in specs if spec.split == split]
        write_data_dir(directory, rows)
        counts[split] = len(rows) - len(drop_unreadable_audio(directory))
    write_lhotse_manifests(specs, audio_dir, os.path.join(data_dir, "manifests"))
    return counts


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description="Synthesise the eSpeak NG corpus of egs/mini/asr1.")
    parser.add_argument("--data_dir", required=True, help="where train/, dev/, test/ and manifests/ go")
    parser.add_argument("--audio_dir", required=True, help="where the WAV files go (<audio_dir>/<split>/*.wav)")
    parser.add_argument("--corpus_size", type=int, default=1800, help="total utterances over all splits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nj", type=int, default=1, help="parallel synthesis processes")
    parser.add_argument("--backend", default="auto", choices=("auto", "program", "library"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s", datefmt="%H:%M:%S")
    try:
        counts = prepare_corpus(args.data_dir, args.audio_dir, args.corpus_size, args.seed, args.nj, args.backend)
    except (RuntimeError, ValueError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    LOG.info("utterances per split: %s", counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
