"""The start-up hook: installed by the .pth file, cheap, stdlib-only, switchable off, shipped in wheels."""

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from conftest import REPO_ROOT, run_python

PROBE = (
    "import json, sys; print(json.dumps({"
    "'heavy': sorted(m for m in ('torch', 'espnet2', 'numpy', 'importlib.metadata') if m in sys.modules), "
    "'finders': [type(f).__name__ for f in sys.meta_path]}))"
)


def test_startup_hook_is_installed_and_imports_nothing_heavy():
    state = json.loads(run_python(PROBE).stdout)
    assert state["heavy"] == []
    assert state["finders"][0] == "_TaskModuleFinder"
    assert state["finders"].count("_TaskModuleFinder") == 1


def test_disable_switch_keeps_the_hook_out():
    state = json.loads(run_python(PROBE, env={"HYBRID_ENCODERS_DISABLE": "1"}).stdout)
    assert "_TaskModuleFinder" not in state["finders"]


def test_install_is_idempotent_and_import_activates():
    code = (
        "import sys, hybrid_encoders, importlib\n"
        "hybrid_encoders.activate(); hybrid_encoders.activate()\n"
        "importlib.reload(hybrid_encoders)\n"
        "print(sum(type(f).__name__ == '_TaskModuleFinder' for f in sys.meta_path))\n"
    )
    assert run_python(code).stdout.strip() == "1"


def test_startup_files_are_in_site_packages():
    site_packages = Path(sysconfig.get_paths()["purelib"])
    assert (site_packages / "hybrid_encoders.pth").read_text().strip() == "import hybrid_encoders._bootstrap"
    assert (site_packages / "hybrid_encoders.start").read_text().strip() == "hybrid_encoders._bootstrap:install"


def test_wheel_ships_startup_files_at_its_root_and_records_them(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(REPO_ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("hybrid_encoders-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        record = archive.read(next(n for n in names if n.endswith(".dist-info/RECORD"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "hybrid_encoders.pth" in names and "hybrid_encoders.start" in names
    assert "hybrid_encoders.pth," in record and "hybrid_encoders.start," in record
    assert "[espnet2.asr.encoder]" in entry_points and "[espnet2.optimizers]" in entry_points
