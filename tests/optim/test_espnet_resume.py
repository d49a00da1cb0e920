"""ESPnet's own trainer with ``--resume true``: stopping at an epoch boundary and resuming gives bit-identical
parameters, buffers (Zipformer's ``batch_count``, the transducer's ``num_updates``), optimizer and scheduler state."""

import re

import pytest
import torch
import yaml

from conftest import TINY_TOKENS, asr_train_arguments, run_espnet, tiny_training_config, write_random_corpus

STEPS_PER_EPOCH = 4  # 8 training utterances in batches of 2


def load_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=False)  # a checkpoint our own test just wrote


def assert_identical(straight, resumed, where):
    """Exact equality of nested checkpoint content (dicts, lists, tensors, numbers), naming the first difference."""
    if isinstance(straight, dict):
        assert straight.keys() == resumed.keys(), where
        for key in straight:
            assert_identical(straight[key], resumed[key], f"{where}[{key!r}]")
    elif isinstance(straight, (list, tuple)):
        assert len(straight) == len(resumed), where
        for index, (a, b) in enumerate(zip(straight, resumed)):
            assert_identical(a, b, f"{where}[{index}]")
    elif isinstance(straight, torch.Tensor):
        assert torch.equal(straight, resumed), where
    else:
        assert straight == resumed, where


@pytest.mark.slow
@pytest.mark.parametrize("system", ["squeezeformer", "hybridformer", "zipformer_transducer"])
def test_resumed_training_equals_uninterrupted_training(tmp_path, system):
    train = write_random_corpus(tmp_path / "train", 2 * STEPS_PER_EPOCH, seed=0)
    valid = write_random_corpus(tmp_path / "valid", 2, seed=1)
    (tmp_path / "tokens.txt").write_text("\n".join(TINY_TOKENS) + "\n")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(tiny_training_config(system)))
    common = asr_train_arguments(train, valid) + [
        "--train_shape_file", f"{train}/wav.scp", "--valid_shape_file", f"{valid}/wav.scp",
    ]
    run_espnet("asr_train", *common, "--output_dir", "straight", "--max_epoch", "2", cwd=tmp_path)
    run_espnet("asr_train", *common, "--output_dir", "resumed", "--max_epoch", "1", cwd=tmp_path)
    log = run_espnet("asr_train", *common, "--output_dir", "resumed", "--max_epoch", "2", "--resume", "true", cwd=tmp_path)
    assert "The training was resumed using resumed/checkpoint.pth" in log

    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.pth")
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoint.pth")
    # ESPnet steps the scheduler after every optimizer step and at every epoch end.
    assert straight["schedulers"][0]["batch"] == 2 * STEPS_PER_EPOCH and straight["schedulers"][0]["epoch"] == 2
    counters = {key: int(value) for key, value in straight["model"].items() if key.endswith(("batch_count", "num_updates"))}
    if system == "zipformer_transducer":
        assert counters == {"encoder.batch_count": 2 * STEPS_PER_EPOCH, "num_updates": 2 * STEPS_PER_EPOCH}
        # the CTC head's CER is computed in validation (it used to be reported as nan)
        valid_cer = [float(v) for v in re.findall(r"\[valid\].*?cer_ctc=([0-9.na]+)", log)]
        assert valid_cer and all(0.0 <= cer <= 1.5 for cer in valid_cer), log[-3000:]
    assert_identical(straight["model"], resumed["model"], "model")
    assert_identical(straight["optimizers"], resumed["optimizers"], "optimizers")
    assert_identical(straight["schedulers"], resumed["schedulers"], "schedulers")
