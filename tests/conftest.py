"""Shared test helpers: repository paths, the golden-tensor folder, and fresh-interpreter runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = REPO_ROOT.parent / "shared" / "golden"


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
