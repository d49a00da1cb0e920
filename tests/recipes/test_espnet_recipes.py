"""egs/{librispeech,aishell}/asr1: setup.sh against absent, wrong-layout and complete ESPnet checkouts; path.sh; and
every documented ``./run.sh`` command, run against a stand-in asr.sh that records its options, checked against what
ESPnet's asr.sh and trainer will need from them (the files stages 4, 5 and 12 read).
"""

import glob
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EGS = os.path.join(os.path.dirname(__file__), "..", "..", "egs")
RECIPES = ("librispeech", "aishell")
# Records asr.sh's arguments (NUL-separated) instead of running the stages.
RECORDING_ASR_SH = '#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "${ASR_ARGS_FILE:-/dev/null}"\n'


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
    (template / "db.sh").write_text("#!/bin/bash\n")
    (template / "asr.sh").write_text(RECORDING_ASR_SH)
    (template / "asr.sh").chmod(0o755)
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


# ---------------------------------------------------------------------------------------------------------------
# path.sh: a system sclite (Debian's sctk package) and the recipe's local/path.sh

def _linked_recipe(recipe, tmp_path):
    espnet = _fake_espnet(tmp_path / "espnet")
    assert _setup(recipe, str(espnet)).returncode == 0
    return espnet


def _fake_sclite(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "sclite").write_text("#!/bin/sh\necho fake sclite\n")
    (directory / "sclite").chmod(0o755)
    return directory / "sclite"


def _source_path_sh(recipe, path, **env):
    """PATH, `command -v sclite` and $RECIPE_LOCAL after sourcing the recipe's path.sh in bash."""
    result = subprocess.run(
        ["bash", "-c", '. ./path.sh; echo "PATH=${PATH}"; echo "SCLITE=$(command -v sclite)"; '
                       'echo "LOCAL=${RECIPE_LOCAL:-}"'],
        cwd=recipe, capture_output=True, text=True, env={"PATH": path, "HOME": os.environ.get("HOME", "/"), **env})
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


@pytest.fixture
def system_path():
    """A PATH with the basic tools and no sclite of this machine's (the tests provide their own)."""
    path = "/usr/bin:/bin"
    if shutil.which("sclite", path=path):
        pytest.skip("this machine has sclite in /usr/bin or /bin, which would hide the fake ones")
    return path


def test_path_sh_adds_debians_sctk_directory_and_sources_local_path_sh(recipe, tmp_path, system_path):
    _linked_recipe(recipe, tmp_path)
    debian = _fake_sclite(tmp_path / "usr" / "lib" / "sctk" / "bin")
    (recipe / "local" / "path.sh").write_text("export RECIPE_LOCAL=yes\nexport PATH=/opt/recipe-tools:${PATH}\n")
    state = _source_path_sh(recipe, system_path, SCTK_BIN_DIRS=f"{tmp_path}/absent:{debian.parent}")
    assert state["SCLITE"] == str(debian)
    assert state["LOCAL"] == "yes"
    # local/path.sh runs last: its PATH entry comes first; the system sclite directory is only a fallback at the end
    assert state["PATH"].startswith("/opt/recipe-tools:") and state["PATH"].endswith(f":{debian.parent}")


def test_path_sh_finds_espnets_own_sctk_build_by_default(recipe, tmp_path, system_path):
    espnet = _linked_recipe(recipe, tmp_path)
    built = _fake_sclite(espnet / "tools" / "sctk" / "bin")
    state = _source_path_sh(recipe, system_path)
    assert state["SCLITE"] == str(built)
    assert state["LOCAL"] == ""  # no local/path.sh: nothing sourced, no error


def test_path_sh_keeps_an_sclite_already_on_path(recipe, tmp_path, system_path):
    _linked_recipe(recipe, tmp_path)
    mine = _fake_sclite(tmp_path / "mine")
    debian = _fake_sclite(tmp_path / "debian")
    state = _source_path_sh(recipe, f"{mine.parent}:{system_path}", SCTK_BIN_DIRS=str(debian.parent))
    assert state["SCLITE"] == str(mine) and str(debian.parent) not in state["PATH"]


# ---------------------------------------------------------------------------------------------------------------
# Documented run.sh commands against what asr.sh and ESPnet's trainer will need

# asr.sh's defaults for the options checked here (egs2/TEMPLATE/asr1/asr.sh)
ASR_SH_DEFAULTS = {"inference_asr_model": "valid.acc.ave.pth", "feats_type": "raw", "token_type": "bpe",
                   "speed_perturb_factors": "", "lm_train_text": "", "bpe_train_text": "", "use_lm": "true"}
# ESPnet's trainer default (espnet2.tasks.abs_task, --best_model_criterion)
ESPNET_BEST_MODEL_CRITERION = [["train", "loss", "min"], ["valid", "loss", "min"], ["train", "acc", "max"],
                               ["valid", "acc", "max"]]


def _reported_metrics(config: dict) -> set:
    """The validation metrics an ASR model of this config reports that best_model_criterion can use: the loss
    always; the attention accuracy only for ESPnet's CTC/attention model with a decoder and ctc_weight < 1 (CTC-only
    models report acc=None, transducer models report no acc)."""
    metrics = {"loss"}
    attention = (config.get("model", "espnet") == "espnet" and str(config.get("decoder", "none")).lower() != "none"
                 and float((config.get("model_conf") or {}).get("ctc_weight", 0.5)) < 1.0)
    return metrics | ({"acc"} if attention else set())


def _checkpoint_problem(name: str, config: dict, config_path: str):
    """Why asr.sh's stage 12 would not find ``exp/asr_*/<name>`` after training with ``config``, or None."""
    if re.fullmatch(r"\d+epoch\.pth|latest\.pth", name):
        return None
    match = re.fullmatch(r"(train|valid)\.(\w+)\.(ave|best)(_\d+best)?\.pth", name)
    if not match:
        return f"--inference_asr_model {name}: not a checkpoint name ESPnet's trainer writes"
    phase, metric = match.group(1), match.group(2)
    criteria = [list(c[:2]) for c in config.get("best_model_criterion") or ESPNET_BEST_MODEL_CRITERION]
    if [phase, metric] not in criteria:
        return (f"--inference_asr_model {name}: {config_path} selects models on {criteria}, so the trainer never "
                f"writes {name}")
    if metric not in _reported_metrics(config):
        return (f"--inference_asr_model {name}: the model of {config_path} does not report '{metric}', so the "
                f"trainer never writes {name}")
    return None


def asr_sh_problems(recipe: Path, options: dict) -> list:
    """What would stop asr.sh, given ``options`` (as it parsed them), at stages 4, 5 or 12 of this recipe."""
    options = {**ASR_SH_DEFAULTS, **options}
    problems = [f"--{key} {options[key]} does not exist in {recipe}" for key in ("asr_config", "inference_config")
                if options.get(key) and not (recipe / options[key]).is_file()]
    if problems:
        return problems
    with open(recipe / options["asr_config"]) as stream:
        config = yaml.safe_load(stream)
    problem = _checkpoint_problem(options["inference_asr_model"], config, options["asr_config"])
    problems += [problem] if problem else []
    # Text files stage 4 (lm_train_text, always) and stage 5 (bpe_train_text, token_type bpe) read. asr.sh fills in
    # both defaults from the original train_set before appending "_sp", so with speed perturbation they name
    # dump/raw/<train_set>/text, which no stage makes.
    train, valid, tests = options["train_set"], options["valid_set"], options["test_sets"].split()
    dump = f"dump/{options['feats_type']}"
    perturbed = bool(options["speed_perturb_factors"].strip())
    made = {f"data/{name}/text" for name in (train, valid, *tests)}
    made |= {f"{dump}/{train}{'_sp' if perturbed else ''}/text", f"{dump}/{valid}/text"}
    made |= {f"data/{train}_sp/text"} if perturbed else set()
    read = {"lm_train_text": True, "bpe_train_text": options["token_type"] == "bpe"}
    for key, used in read.items():
        for path in (options[key] or f"{dump}/{train}/text").split():
            if used and path not in made:
                problems.append(f"--{key} {path}: asr.sh reads it but no stage before makes it (made: {sorted(made)})")
    return problems


def _logical_lines(lines):
    """Join backslash continuations."""
    joined = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            joined += line.rstrip()[:-1] + " "
            continue
        yield joined + line
        joined = ""


# "./run.sh" or "egs/<corpus>/asr1/run.sh" as a command word
RUN_SH = re.compile(r"(?:^|\s)(?:\./|(?:\S*/)?egs/(?P<corpus>\w+)/asr1/)run\.sh(?=\s|$)")


def documented_commands():
    """(file, corpus, argv) for every ``run.sh`` command of an asr.sh recipe in README.md, docs/, the egs READMEs and
    the run.sh headers. A command outside a recipe directory names its recipe (``egs/<corpus>/asr1/run.sh``) or
    follows a ``cd egs/<corpus>/asr1`` in the same code block; one that names none must work in every recipe."""
    files = [REPO / "README.md", *sorted(REPO.glob("docs/**/*.md"))]
    files += [REPO / "egs" / corpus / "asr1" / name for corpus in RECIPES for name in ("README.md", "run.sh")]
    found = []
    for path in files:
        text = path.read_text()
        if path.name == "run.sh":
            blocks = [[line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]]
        else:
            blocks = [block.splitlines() for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S)]
        for block in blocks:
            corpus = path.parent.parent.name if path.parent.name == "asr1" else None
            for line in _logical_lines(block):
                if re.match(r"\s*cd\s", line):
                    match = re.search(r"egs/(\w+)/asr1", line)
                    corpus = match.group(1) if match else None
                match = RUN_SH.search(line)
                if not match:
                    continue
                target = match.group("corpus") or corpus
                if target == "mini":  # not an asr.sh recipe: ESPnet's entry points called stage by stage
                    continue
                words = shlex.split(line[match.start():], comments=True)
                for corpus_of_command in [target] if target else RECIPES:
                    found.append((str(path.relative_to(REPO)), corpus_of_command, ["./run.sh", *words[1:]]))
    return found


COMMANDS = documented_commands()


@pytest.fixture(scope="module")
def linked_recipes(tmp_path_factory):
    """Both recipes copied and linked to a stand-in ESPnet checkout whose asr.sh records its options."""
    root = tmp_path_factory.mktemp("recipes")
    shutil.copytree(os.path.join(EGS, "TEMPLATE"), root / "egs" / "TEMPLATE", symlinks=True)
    espnet = _fake_espnet(root / "espnet")
    for corpus in RECIPES:
        shutil.copytree(os.path.join(EGS, corpus), root / "egs" / corpus, symlinks=True,
                        ignore=shutil.ignore_patterns("data", "exp", "dump", "asr.sh", "db.sh", "cmd.sh", "scripts",
                                                      "pyscripts", "utils", "steps", ".espnet_root"))
        assert _setup(root / "egs" / corpus / "asr1", str(espnet)).returncode == 0
    return root / "egs"


def run_recorded(recipe: Path, argv: list) -> tuple:
    """Run ``argv`` (``./run.sh ...``) in ``recipe``; the options asr.sh received (last occurrence wins, as in
    utils/parse_options.sh) and run.sh's stderr."""
    record = recipe / "asr_args"
    record.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "ASR_ARGS_FILE": str(record)}
    env.pop("ESPNET_ROOT", None)
    result = subprocess.run(argv, cwd=recipe, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stderr}"
    words = record.read_text().split("\0")[:-1]
    options, index = {}, 0
    while index < len(words):
        assert words[index].startswith("--"), f"asr.sh would reject the positional argument {words[index]!r}"
        if "=" in words[index]:
            key, value = words[index][2:].split("=", 1)
            index += 1
        else:
            key, value = words[index][2:], words[index + 1]
            index += 2
        options[key] = value
    return options, result.stderr


def test_the_documented_commands_are_found():
    assert {(path, corpus) for path, corpus, _ in COMMANDS} >= {
        (f"egs/{corpus}/asr1/{name}", corpus) for corpus in RECIPES for name in ("README.md", "run.sh")}


@pytest.mark.parametrize("source, corpus, argv", COMMANDS,
                         ids=[f"{c[0]}:{c[1]}:{' '.join(c[2][1:])[:60]}" for c in COMMANDS])
def test_documented_command_gives_asr_sh_what_its_stages_need(linked_recipes, source, corpus, argv):
    recipe = linked_recipes / corpus / "asr1"
    options, _ = run_recorded(recipe, argv)
    assert asr_sh_problems(recipe, options) == [], f"{source}: {' '.join(argv)}"


@pytest.mark.parametrize("corpus", RECIPES)
def test_run_sh_decodes_a_checkpoint_every_tuning_config_writes(linked_recipes, corpus):
    recipe = linked_recipes / corpus / "asr1"
    configs = sorted(os.path.relpath(p, recipe) for p in glob.glob(str(recipe / "conf" / "tuning" / "*.yaml")))
    chosen = {}
    for config in configs:
        options, _ = run_recorded(recipe, ["./run.sh", "--asr_config", config])
        assert options["asr_config"] == config
        assert asr_sh_problems(recipe, options) == [], config
        chosen[config] = options["inference_asr_model"]
    assert chosen["conf/tuning/train_asr_zipformer_m_transducer.yaml"] == "valid.loss.ave.pth"
    assert chosen["conf/tuning/train_asr_zipformer_m.yaml"] == "valid.acc.ave.pth"


def test_run_sh_passes_a_given_inference_model_and_warns_about_missing_tools(linked_recipes):
    recipe = linked_recipes / "librispeech" / "asr1"
    options, stderr = run_recorded(recipe, ["./run.sh", "--asr_config=conf/tuning/train_asr_squeezeformer_sm_ctc.yaml",
                                            "--inference_asr_model", "valid.loss.best.pth"])
    assert options["inference_asr_model"] == "valid.loss.best.pth"
    assert asr_sh_problems(recipe, options) == []
    if not shutil.which("sclite"):
        assert "sclite is not on PATH; asr.sh's stage 13 (scoring) needs it" in stderr


def test_run_sh_names_a_missing_config(linked_recipes):
    recipe = linked_recipes / "aishell" / "asr1"
    result = subprocess.run(["./run.sh", "--asr_config", "conf/tuning/nope.yaml"], cwd=recipe, capture_output=True,
                            text=True, env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert result.returncode != 0
    assert "the ASR training config conf/tuning/nope.yaml does not exist" in result.stderr


def test_the_checks_catch_the_two_reported_breakages(linked_recipes):
    """The model of asr.sh above fails the two reported cases: no --lm_train_text with speed perturbation (stage 4)
    and asr.sh's default valid.acc.ave.pth with a CTC-only config (stage 12)."""
    recipe = linked_recipes / "librispeech" / "asr1"
    options = {"asr_config": "conf/tuning/train_asr_squeezeformer_sm_ctc.yaml", "train_set": "train_960",
               "valid_set": "dev", "test_sets": "test_clean", "speed_perturb_factors": "0.9 1.0 1.1",
               "bpe_train_text": "data/train_960/text"}
    problems = asr_sh_problems(recipe, options)
    assert len(problems) == 2
    assert problems[0].startswith("--inference_asr_model valid.acc.ave.pth: ")
    assert problems[1].startswith("--lm_train_text dump/raw/train_960/text: asr.sh reads it but no stage")
