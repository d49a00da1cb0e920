"""``hybrid-encoders doctor`` and ``list`` as a user runs them, including on a broken environment."""

import re
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
    assert re.search(r"\[ok     \] registration: (\d+) of \1 entry points of hybrid-encoders registered", result.stdout)
    assert "[ok     ] auto-registration: hook active" in result.stdout
    listing = run_cli("list")
    assert listing.returncode == 0, listing.stderr
    rows = {tuple(line.split()[:3]): line.split()[3:] for line in listing.stdout.splitlines()[2:] if line.strip()}
    for name, registry in (("squeezeformer", "espnet2.tasks.asr encoder"), ("zipformer", "espnet2.tasks.st encoder"),
                           ("scaled_adam", "espnet2.tasks.abs_task optim_classes"),
                           ("noam_hold_annealing", "espnet2.tasks.abs_task scheduler_classes")):
        assert rows[(name, *registry.split())][1] == "hybrid-encoders"
    # the class each name resolves to
    assert rows[("zipformer", "espnet2.tasks.asr", "encoder")][0] == "hybrid_encoders.encoders.zipformer.ZipformerEncoder"
    assert rows[("eden", "espnet2.tasks.abs_task", "scheduler_classes")][0] == "hybrid_encoders.schedulers.eden.Eden"


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


def _fake_versions(monkeypatch, **versions):
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda name: versions[name] if name in versions else real(name))


def test_doctor_recognises_a_pip_that_refuses_espnets_dependencies(monkeypatch):
    # pip >= 25 rejects ci_sdr (a dependency of espnet) for its git URL dependency: without ESPnet installed, the
    # documented install fails, and the fix must say so.
    _fake_versions(monkeypatch, pip="26.3", espnet=None)
    check = doctor._check_pip()
    assert check.status == "problem" and check.detail.startswith("26.3: pip >= 25 refuses espnet's dependency ci_sdr")
    assert check.fix.startswith("python -m pip install 'pip<25'")
    assert doctor.install_command().startswith("python -m pip install 'pip<25' && pip install torch==2.11.0")
    espnet = doctor._check_distribution("espnet", "espnet2")
    assert espnet.status == "problem" and espnet.fix == doctor.install_command()
    # With ESPnet installed, what is there works: a note for the next upgrade.
    _fake_versions(monkeypatch, pip="25.0.1", espnet="202511")
    assert doctor._check_pip().status == "note"
    _fake_versions(monkeypatch, pip="24.3.1", espnet=None)
    assert doctor._check_pip().status == "ok" and doctor.install_command() == doctor.PIN_COMMAND


def test_verdict_lists_what_each_problem_breaks(monkeypatch, capsys):
    checks = [
        doctor.Check("python", "ok", "3.11.7"),
        doctor.Check("registration", "problem", "11 of 12 ...", "set X", "ESPnet sees 11 of this package's 12 entry "
                     "points; not: zipformer (espnet2.tasks.asr encoder: ...)"),
    ]
    monkeypatch.setattr(doctor, "run_checks", lambda quick: checks)
    assert doctor.run(type("Args", (), {"quick": False})()) == 1
    out = capsys.readouterr().out
    assert "verdict: 1 problem(s):\n  - registration: ESPnet sees 11 of this package's 12 entry points; not: zipformer" in out
    assert "will not see this package's components" not in out
