"""Every YAML under egs/ (recipes) and conf/ (presets) passes ESPnet's own checks with the plugin installed.

Training configs (every file not named ``decode*.yaml``) go through ``asr_train --dry_run true --iterator_type
none``, which parses the YAML with ESPnet's argument parser and builds the model, optimizer and scheduler; language
model configs (``train_lm*.yaml``) go through ``lm_train`` the same way. Decoding configs (``decode_*.yaml``) must
only use options of ``asr_inference``, streaming ones (``decode_*streaming*.yaml``) options of our
``hybrid_encoders.bin.asr_inference_streaming``. All configs are checked in ONE Python subprocess
(``import espnet2.tasks.asr`` takes 10-25 s), a config whose encoder or model class is not registered is skipped
with the reason. Encoder presets without a decoder (conf/<encoder>/*.yaml) are checked as CTC-only models
(``--model_conf ctc_weight=1.0``): ESPnet's default ctc_weight of 0.5 needs a decoder.
"""

import glob
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIGS = sorted(os.path.relpath(path, REPO) for pattern in (("egs", "*", "asr1", "conf", "**", "*.yaml"),
                                                              ("conf", "**", "*.yaml"))
                 for path in glob.glob(os.path.join(REPO, *pattern), recursive=True))
DECODE_CONFIGS = [c for c in CONFIGS if os.path.basename(c).startswith("decode")]
LM_CONFIGS = [c for c in CONFIGS if os.path.basename(c).startswith("train_lm")]
TRAIN_CONFIGS = [c for c in CONFIGS if c not in DECODE_CONFIGS + LM_CONFIGS]

CHECKER = r"""
import contextlib, io, json, logging, sys, tempfile, traceback
import yaml
from espnet2.bin.asr_inference import get_parser
from hybrid_encoders.bin.asr_inference_streaming import get_parser as get_streaming_parser
from espnet2.tasks.asr import ASRTask, decoder_choices, encoder_choices, model_choices
from espnet2.tasks.lm import LMTask

logging.disable(logging.CRITICAL)
work = tempfile.mkdtemp()
with open(work + "/tokens.txt", "w") as stream:
    stream.write("<blank>\n<unk>\na\nb\n<sos/eos>\n")
inference_options = {action.dest for action in get_parser()._actions}
streaming_options = {action.dest for action in get_streaming_parser()._actions}
for kind, path in json.loads(sys.argv[1]):
    with open(path) as stream:
        config = yaml.safe_load(stream)
    result = {"config": path, "status": "ok", "reason": ""}
    if kind in ("decode", "decode_streaming"):
        entry_point, options = (("asr_inference", inference_options) if kind == "decode"
                                else ("asr_inference_streaming", streaming_options))
        unknown = sorted(set(config) - options)
        if unknown:
            result.update(status="fail", reason=f"not {entry_point} options: {unknown}")
        print(json.dumps(result), flush=True)
        continue
    # choices() lists the registered names, plus None when the slot is optional ("decoder: none" for CTC only).
    missing = [f"{key}: {config[key]}" for key, choices in
               (("encoder", encoder_choices), ("decoder", decoder_choices), ("model", model_choices))
               if key in config and str(config[key]).lower() not in [str(c).lower() for c in choices.choices()]]
    if missing:
        result.update(status="skip", reason="not registered (yet): " + ", ".join(missing))
        print(json.dumps(result), flush=True)
        continue
    task, extra = ASRTask, [] if "decoder" in config else ["--model_conf", "ctc_weight=1.0"]
    if kind == "lm":
        task, extra = LMTask, []
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            task.main(cmd=["--config", path, "--dry_run", "true", "--iterator_type", "none", "--ngpu", "0",
                           "--token_type", "char", "--token_list", work + "/tokens.txt",
                           "--output_dir", work + "/exp", "--log_level", "ERROR", *extra])
    except BaseException as error:
        result.update(status="fail", reason=f"{type(error).__name__}: {error}\n{traceback.format_exc()[-2000:]}")
    print(json.dumps(result), flush=True)
"""


@pytest.fixture(scope="module")
def outcomes():
    jobs = ([["train", c] for c in TRAIN_CONFIGS] + [["lm", c] for c in LM_CONFIGS]
            + [["decode_streaming" if "streaming" in os.path.basename(c) else "decode", c] for c in DECODE_CONFIGS])
    completed = subprocess.run([sys.executable, "-c", CHECKER, json.dumps(jobs)], cwd=REPO, capture_output=True,
                               text=True, timeout=900)
    results = {}
    for line in completed.stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            results[record["config"]] = record
    if completed.returncode != 0 and len(results) < len(jobs):
        pytest.fail(f"config checker crashed:\n{completed.stderr[-3000:]}")
    return results


def test_every_recipe_has_configs():
    for recipe in ("mini", "librispeech", "aishell"):
        assert any(c.startswith(os.path.join("egs", recipe, "")) for c in TRAIN_CONFIGS), recipe
        assert any(c.startswith(os.path.join("egs", recipe, "")) for c in DECODE_CONFIGS), recipe


@pytest.mark.parametrize("config", TRAIN_CONFIGS + LM_CONFIGS + DECODE_CONFIGS)
def test_config_passes_espnet_checks(outcomes, config):
    outcome = outcomes[config]
    if outcome["status"] == "skip":
        pytest.skip(outcome["reason"])
    assert outcome["status"] == "ok", outcome["reason"]
