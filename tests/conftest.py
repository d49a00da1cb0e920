"""Shared test helpers: repository paths, the golden-tensor folder, and fresh-interpreter runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"  # beside the checkout
GOLDEN_DIR = SHARED_DIR / "golden"
RESEARCH_DIR = SHARED_DIR / "research"


def golden_path(name: str) -> Path:
    """Path of a reference-implementation tensor file; skips the test, saying why, where it is absent."""
    path = GOLDEN_DIR / name
    if not path.is_file():
        pytest.skip(f"golden reference {path} is absent (it lives in ../shared/golden beside the checkout)")
    return path


def run_python(code: str, env: dict = None, cwd=None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this environment; fails the test with its output on non-zero exit."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", code], env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(f"subprocess failed ({result.returncode}):\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}")
    return result


def write_random_corpus(directory: Path, count: int, seed: int, letters: str = "abcd") -> Path:
    """A Kaldi-style data directory of random-noise 16 kHz wav files (0.37-0.56 s) with random letter transcripts."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(seed)
    directory.mkdir()
    wav_scp, text = [], []
    for index in range(count):
        key = f"{directory.name}{index:02d}"
        path = directory / f"{key}.wav"
        soundfile.write(str(path), rng.standard_normal(int(rng.integers(6000, 9000))).astype(np.float32) * 0.1, 16000)
        wav_scp.append(f"{key} {path}")
        text.append(f"{key} {''.join(rng.choice(list(letters), size=int(rng.integers(2, 5))))}")
    (directory / "wav.scp").write_text("\n".join(wav_scp) + "\n")
    (directory / "text").write_text("\n".join(text) + "\n")
    return directory


def run_espnet(module: str, *args, cwd) -> str:
    """Run ``python -m espnet2.bin.<module> args`` in ``cwd``; fails the test with the log tail on error."""
    result = subprocess.run(
        [sys.executable, "-m", f"espnet2.bin.{module}", *map(str, args)], cwd=cwd, capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{module} failed:\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def randomise_batch_norms(module):
    """Give every BatchNorm1d non-trivial running statistics and affine parameters (as a trained model has), so that
    eval-mode BatchNorm folding is exercised with all four; returns ``module``."""
    import torch

    for sub in module.modules():
        if isinstance(sub, torch.nn.BatchNorm1d):
            sub.running_mean.uniform_(-1, 1)
            sub.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(sub.weight, -1.5, 1.5)
            torch.nn.init.uniform_(sub.bias, -1, 1)
    return module


def asr_train_arguments(train: Path, valid: Path, config: str = "train.yaml", tokens: str = "tokens.txt") -> list:
    """The ``asr_train`` options of a tiny char-level run on two :func:`write_random_corpus` directories (CPU)."""
    return [
        "--config", config, "--use_preprocessor", "true", "--token_type", "char", "--token_list", tokens,
        "--ngpu", "0",
        "--train_data_path_and_name_and_type", f"{train}/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type", f"{train}/text,text,text",
        "--valid_data_path_and_name_and_type", f"{valid}/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type", f"{valid}/text,text,text",
    ]
