"""``hybrid-encoders doctor`` and ``list`` as a user runs them, including on a broken environment."""

import subprocess
import sys
from pathlib import Path

from hybrid_encoders.commands import doctor

from conftest import REPO_ROOT


def run_cli(*args, env=None, timeout=300):
    import os

    return subprocess.run(
        [sys.executable, "-m", "hybrid_encoders", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def test_tested_versions_match_the_pinned_requirements():
    pins = {}
    for line in (REPO_ROOT / "requirements" / "tested.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    assert {name: pins[name] for name in doctor.TESTED_VERSIONS} == doctor.TESTED_VERSIONS


def test_doctor_gives_a_clean_verdict_and_list_shows_our_components():
    result = run_cli("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: OK" in result.stdout
    assert "[ok     ] auto-registration: hook active" in result.stdout
    listing = run_cli("list")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[2:] if line.strip()}
    for name in ("squeezeformer", "hybridformer", "zipformer", "scaled_adam", "eden", "noam_hold_annealing"):
        assert name in rows and "hybrid-encoders" in rows[name]
    assert "espnet2.tasks.asr encoder" in rows["zipformer"]
    assert "espnet2.tasks.abs_task optim_classes" in rows["scaled_adam"]


def test_doctor_and_list_explain_a_missing_espnet(tmp_path: Path):
    broken = tmp_path / "espnet2"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('simulated broken ESPnet')\n")
    env = {"PYTHONPATH": str(tmp_path)}
    result = run_cli("doctor", env=env)
    assert result.returncode == 1
    assert "[PROBLEM] espnet:" in result.stdout and "simulated broken ESPnet" in result.stdout
    assert "fix: pip install torch==2.11.0 torchaudio==2.11.0 espnet==202511" in result.stdout
    listing = run_cli("list", env=env)
    assert listing.returncode == 1
    assert "ESPnet cannot be imported" in listing.stdout and "pip install espnet" in listing.stdout


def test_doctor_reports_a_disabled_hook():
    result = run_cli("doctor", "--quick", env={"HYBRID_ENCODERS_DISABLE": "1"})
    assert result.returncode == 1
    assert "[PROBLEM] auto-registration: disabled by HYBRID_ENCODERS_DISABLE" in result.stdout
