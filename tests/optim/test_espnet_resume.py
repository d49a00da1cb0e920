"""ScaledAdam + Eden driven by ESPnet's own trainer: epoch bookkeeping, and ``--resume true`` continuing bit-exactly."""

import pytest
import torch
import yaml

from conftest import asr_train_arguments, run_espnet, write_random_corpus

TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "<sos/eos>"]


def load_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=False)  # a checkpoint our own test just wrote


@pytest.mark.slow
def test_resumed_training_equals_uninterrupted_training(tmp_path):
    train = write_random_corpus(tmp_path / "train", 8, seed=0)
    valid = write_random_corpus(tmp_path / "valid", 2, seed=1)
    (tmp_path / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    config = {
        "frontend_conf": {"n_fft": 512, "hop_length": 160, "n_mels": 20},
        "encoder": "squeezeformer",
        "encoder_conf": {"output_size": 16, "attention_heads": 2, "num_blocks": 4, "cnn_module_kernel": 5,
                         "dropout_rate": 0.0},
        "model_conf": {"ctc_weight": 1.0},
        "optim": "scaled_adam", "optim_conf": {"lr": 0.02},
        "scheduler": "eden", "scheduler_conf": {"lr_batches": 10, "lr_epochs": 1, "warmup_batches": 3},
        "grad_clip": float("inf"),
        "batch_type": "unsorted", "batch_size": 2, "num_workers": 0, "seed": 0,
        "best_model_criterion": [["valid", "loss", "min"]], "keep_nbest_models": 1,
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    common = asr_train_arguments(train, valid) + [
        "--train_shape_file", f"{train}/wav.scp", "--valid_shape_file", f"{valid}/wav.scp",
    ]
    run_espnet("asr_train", *common, "--output_dir", "straight", "--max_epoch", "3", cwd=tmp_path)
    run_espnet("asr_train", *common, "--output_dir", "resumed", "--max_epoch", "1", cwd=tmp_path)
    log = run_espnet("asr_train", *common, "--output_dir", "resumed", "--max_epoch", "3", "--resume", "true", cwd=tmp_path)
    assert "The training was resumed using resumed/checkpoint.pth" in log

    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.pth")
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoint.pth")
    # ESPnet steps the scheduler after every optimizer step (4 batches per epoch) and at every epoch end.
    assert straight["schedulers"][0]["batch"] == 12 and straight["schedulers"][0]["epoch"] == 3
    assert resumed["schedulers"][0] == straight["schedulers"][0]
    assert straight["model"].keys() == resumed["model"].keys()
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    straight_lr = straight["optimizers"][0]["param_groups"][0]["lr"]
    assert straight_lr == resumed["optimizers"][0]["param_groups"][0]["lr"]
