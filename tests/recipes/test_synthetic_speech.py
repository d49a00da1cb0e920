"""The eSpeak NG corpus of egs/mini/asr1: determinism, held-out voices, audio format, transcripts, bad input."""

import builtins
import glob
import hashlib
import os
import re
import sys

import numpy as np
import pytest
import soundfile

from hybrid_encoders.recipes import espeak, synthetic_speech
from hybrid_encoders.recipes.grammar import HELD_OUT_STRUCTURES, TRAIN_STRUCTURES, normalize_transcript
from hybrid_encoders.recipes.kaldi_dir import read_data_dir, read_table

pytest.importorskip("espeakng_loader")

MIN_SIZE = sum(len(speakers) for speakers in synthetic_speech.SPEAKERS.values())
SIZE = 2 * MIN_SIZE
SPLITS = ("train", "dev", "dev_other", "test", "test_other")


def _audio_hashes(audio_dir):
    hashes = {}
    for path in sorted(glob.glob(os.path.join(audio_dir, "*", "*.wav"))):
        with open(path, "rb") as stream:
            hashes[os.path.relpath(path, audio_dir)] = hashlib.sha256(stream.read()).hexdigest()
    return hashes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    counts = synthetic_speech.prepare_corpus(str(root / "data"), str(root / "wav"), SIZE, seed=7, backend="library")
    return root, counts


def test_same_seed_gives_identical_audio(corpus, tmp_path):
    root, _ = corpus
    synthetic_speech.prepare_corpus(str(tmp_path / "data"), str(tmp_path / "wav"), SIZE, seed=7, nj=2,
                                    backend="library")
    first, second = _audio_hashes(str(root / "wav")), _audio_hashes(str(tmp_path / "wav"))
    assert len(first) == SIZE
    assert first == second


def test_other_seed_gives_other_audio(corpus, tmp_path):
    root, _ = corpus
    specs = synthetic_speech.plan_corpus(SIZE, seed=8)[:3]
    synthetic_speech.synthesize_corpus(specs, str(tmp_path), backend="library")
    other = _audio_hashes(str(tmp_path))
    same_names = _audio_hashes(str(root / "wav"))
    assert other and all(other[name] != same_names[name] for name in other)


def test_split_sizes_and_held_out_voices(corpus):
    root, counts = corpus
    assert counts == synthetic_speech.split_sizes(SIZE)
    assert sum(counts.values()) == SIZE
    assert tuple(counts) == SPLITS
    speakers = {split: {u.speaker for u in read_data_dir(str(root / "data" / split))} for split in counts}
    for split in SPLITS:
        assert speakers[split] == set(synthetic_speech.SPEAKERS[split])
    assert speakers["test_other"] == speakers["test"] and speakers["dev_other"] == speakers["dev"]
    for split in SPLITS[1:]:
        assert not speakers["train"] & speakers[split]
    # The voice actually rendered (variant after "+") is the speaker of the utterance.
    for spec in synthetic_speech.plan_corpus(SIZE, seed=7):
        assert spec.voice.split("+")[1] == spec.speaker
        assert spec.voice.split("+")[0] in synthetic_speech.ACCENTS


def test_audio_is_16k_mono_and_not_silent(corpus):
    root, _ = corpus
    for split in ("train", "test"):
        for utterance in read_data_dir(str(root / "data" / split))[:5]:
            info = soundfile.info(utterance.wav_path)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            samples, _ = soundfile.read(utterance.wav_path, dtype="float32")
            assert 0.5 < samples.shape[0] / 16000 < 15.0
            rms = float(np.sqrt(np.mean(samples ** 2)))
            assert rms > 0.02
            # Speech, not just noise: the loudest 50 ms frame is far above the quietest one.
            frames = samples[: samples.shape[0] // 800 * 800].reshape(-1, 800)
            energy = np.mean(frames ** 2, axis=1)
            assert energy.max() > 30 * energy.min()


def test_transcripts_are_disjoint_between_splits(corpus):
    root, _ = corpus
    texts = {split: set(read_table(str(root / "data" / split / "text")).values()) for split in SPLITS}
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1:]:
            assert not texts[first] & texts[second], (first, second)
    # The *_other sets come from the held-out structures (their sentences carry the structure's signature).
    for spec in synthetic_speech.plan_corpus(SIZE, seed=7):
        if spec.split.endswith("_other"):
            assert re.search(HELD_OUT_STRUCTURES[spec.structure].signature, spec.text), spec
        else:
            assert spec.structure in TRAIN_STRUCTURES, spec


def test_transcripts_are_normalised(corpus):
    root, _ = corpus
    specs = {spec.utt_id: spec for spec in synthetic_speech.plan_corpus(SIZE, seed=7)}
    for split in SPLITS:
        texts = read_table(str(root / "data" / split / "text"))
        for utt_id, text in texts.items():
            assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", text), text
            assert text == normalize_transcript(specs[utt_id].text)


def test_kaldi_files_are_consistent(corpus):
    root, _ = corpus
    directory = root / "data" / "dev"
    utt2spk = read_table(str(directory / "utt2spk"))
    spk2utt = {speaker: utts.split() for speaker, utts in read_table(str(directory / "spk2utt")).items()}
    assert sorted(utt2spk) == list(utt2spk)
    assert {u for utts in spk2utt.values() for u in utts} == set(utt2spk)
    assert all(utt2spk[u] == speaker for speaker, utts in spk2utt.items() for u in utts)


def test_lhotse_manifests_match_data_dirs(corpus):
    lhotse = pytest.importorskip("lhotse")
    root, _ = corpus
    supervisions = lhotse.load_manifest(str(root / "data" / "manifests" / "mini_supervisions_test.jsonl.gz"))
    recordings = lhotse.load_manifest(str(root / "data" / "manifests" / "mini_recordings_test.jsonl.gz"))
    texts = read_table(str(root / "data" / "test" / "text"))
    assert {s.id: s.text for s in supervisions} == texts
    assert all(recordings[s.recording_id].sampling_rate == 16000 for s in supervisions)


def test_add_noise_reaches_the_requested_snr():
    rng = np.random.default_rng(0)
    speech = np.sin(np.arange(16000) * 0.05)
    noisy = synthetic_speech.add_noise(speech, 23.0, rng)
    noise = noisy - speech
    snr = 10 * np.log10(np.mean(speech ** 2) / np.mean(noise ** 2))
    assert snr == pytest.approx(23.0, abs=1e-9)


def test_corpus_too_small_is_rejected():
    with pytest.raises(ValueError, match="--corpus_size must be at least"):
        synthetic_speech.split_sizes(MIN_SIZE - 1)


def test_missing_espeak_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_loader(name, *args, **kwargs):
        if name == "espeakng_loader":
            raise ImportError("No module named 'espeakng_loader'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_loader)
    monkeypatch.setattr(espeak.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="espeakng-loader.*espeak-ng"):
        espeak.open_synthesizer("auto")
    with pytest.raises(RuntimeError, match="pip install espeakng-loader"):
        espeak.open_synthesizer("library")
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        espeak.open_synthesizer("program")


def test_unknown_voice_and_bad_parameters_are_named():
    synthesizer = espeak.EspeakLibrary()
    with pytest.raises(ValueError, match="no voice 'en-xx\\+m3'"):
        synthesizer.synthesize("hello", "en-xx+m3", 150, 50)
    with pytest.raises(ValueError, match="rate"):
        synthesizer.synthesize("hello", "en-us+m3", 20, 50)


def test_program_backend_passes_options_and_reads_stdout(tmp_path):
    """EspeakProgram against a stand-in ``espeak-ng`` that echoes its arguments as a WAV on stdout."""
    fake = tmp_path / "espeak-ng"
    fake.write_text(f"""#!{sys.executable}
import io, sys
import numpy as np, soundfile
args = sys.argv[1:]
assert args[args.index("-v") + 1] == "en-us+f3" and args[args.index("-s") + 1] == "170"
assert args[args.index("-p") + 1] == "40" and "--stdout" in args and args[-1] == "call one two"
buffer = io.BytesIO()
soundfile.write(buffer, np.arange(100, dtype=np.int16), 22050, format="WAV", subtype="PCM_16")
sys.stdout.buffer.write(buffer.getvalue())
""")
    fake.chmod(0o755)
    synthesizer = espeak.open_synthesizer("program", executable=str(fake))
    samples, rate = synthesizer.synthesize("call one two", "en-us+f3", 170, 40)
    assert rate == 22050 and samples.dtype == np.int16
    assert np.array_equal(samples, np.arange(100, dtype=np.int16))
    with pytest.raises(ValueError, match="failed"):
        synthesizer.synthesize("other text", "en-us+f3", 170, 40)
