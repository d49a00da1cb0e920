"""egs/{librispeech,aishell}/asr1: setup.sh against absent, wrong-layout and complete ESPnet checkouts."""

import os
import shutil
import subprocess

import pytest

EGS = os.path.join(os.path.dirname(__file__), "..", "..", "egs")


@pytest.fixture(params=["librispeech", "aishell"])
def recipe(request, tmp_path):
    """A copy of egs/TEMPLATE and egs/<corpus>, symlinks kept, so setup.sh runs without touching the repository."""
    shutil.copytree(os.path.join(EGS, "TEMPLATE"), tmp_path / "egs" / "TEMPLATE", symlinks=True)
    shutil.copytree(os.path.join(EGS, request.param), tmp_path / "egs" / request.param, symlinks=True,
                    ignore=shutil.ignore_patterns("data", "exp", "dump"))
    return tmp_path / "egs" / request.param / "asr1"


def _fake_espnet(root, kaldi=True):
    template = root / "egs2" / "TEMPLATE" / "asr1"
    (template / "scripts").mkdir(parents=True)
    (template / "pyscripts").mkdir()
    for name in ("asr.sh", "db.sh"):
        (template / name).write_text("#!/bin/bash\n")
    (template / "cmd.sh").write_text("cmd_backend='slurm'\nif [ \"${cmd_backend}\" = local ]; then :; fi\n")
    if kaldi:
        for name in ("utils", "steps"):
            (root / "tools" / "kaldi" / "egs" / "wsj" / "s5" / name).mkdir(parents=True)
    return root


def _setup(recipe, *args, env=None):
    return subprocess.run(["bash", str(recipe / "setup.sh"), *args], capture_output=True, text=True,
                          env={**os.environ, "ESPNET_ROOT": "", **(env or {})})


def test_no_checkout_says_how_to_get_one(recipe):
    result = _setup(recipe)
    assert result.returncode != 0
    assert "no ESPnet checkout given" in result.stderr and "git clone https://github.com/espnet/espnet" in result.stderr


def test_wrong_layout_names_the_missing_file(recipe, tmp_path):
    (tmp_path / "not_espnet").mkdir()
    result = _setup(recipe, str(tmp_path / "not_espnet"))
    assert result.returncode != 0
    assert "does not have the layout of an ESPnet checkout" in result.stderr
    assert "egs2/TEMPLATE/asr1/asr.sh is missing" in result.stderr


def test_missing_kaldi_scripts_say_how_to_install(recipe, tmp_path):
    espnet = _fake_espnet(tmp_path / "espnet", kaldi=False)
    result = _setup(recipe, str(espnet))
    assert result.returncode != 0
    assert "Kaldi's scripts are missing" in result.stderr and "git clone --depth 1" in result.stderr


def test_complete_checkout_is_linked(recipe, tmp_path):
    espnet = _fake_espnet(tmp_path / "espnet")
    result = _setup(recipe, env={"ESPNET_ROOT": str(espnet)})
    assert result.returncode == 0, result.stderr
    template = espnet / "egs2" / "TEMPLATE" / "asr1"
    for name in ("asr.sh", "db.sh", "scripts", "pyscripts"):
        assert os.readlink(recipe / name) == str(template / name)
    for name in ("utils", "steps"):
        assert os.readlink(recipe / name) == str(espnet / "tools" / "kaldi" / "egs" / "wsj" / "s5" / name)
    assert (recipe / "cmd.sh").read_text().startswith("cmd_backend='local'\n")
    assert (recipe / ".espnet_root").read_text().strip() == str(espnet)
    # Running it again keeps the (possibly edited) cmd.sh and refreshes the links.
    (recipe / "cmd.sh").write_text("edited\n")
    assert _setup(recipe, str(espnet)).returncode == 0
    assert (recipe / "cmd.sh").read_text() == "edited\n"


def test_run_before_setup_says_what_to_do(recipe):
    result = subprocess.run(["bash", str(recipe / "run.sh")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "asr.sh is missing: run ./setup.sh /path/to/espnet first" in result.stderr
