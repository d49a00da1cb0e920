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


TINY_TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "<sos/eos>"]  # the letters of write_random_corpus

_TINY_SYSTEMS = {
    "squeezeformer": {
        "encoder": "squeezeformer",
        "encoder_conf": {"output_size": 16, "attention_heads": 2, "num_blocks": 4, "cnn_module_kernel": 5,
                         "dropout_rate": 0.0},
        "model_conf": {"ctc_weight": 1.0},
    },
    "hybridformer": {
        "encoder": "hybridformer",
        "encoder_conf": {"output_size": 16, "attention_heads": 2, "num_blocks": 4, "cnn_module_kernel": 7,
                         "nsr_mode": "train", "dropout_rate": 0.0},
        "decoder": "transformer",
        "decoder_conf": {"attention_heads": 2, "linear_units": 16, "num_blocks": 1},
        "model_conf": {"ctc_weight": 0.3},
    },
    "zipformer": {
        "encoder": "zipformer",
        "encoder_conf": {"downsampling_factor": [1, 2, 1], "num_encoder_layers": 1, "encoder_dim": [16, 24, 16],
                         "encoder_unmasked_dim": 12, "feedforward_dim": 32, "num_heads": 2, "query_head_dim": 4,
                         "value_head_dim": 4, "pos_head_dim": 2, "pos_dim": 8, "cnn_module_kernel": 3,
                         "schedule_batch_scale": 500.0},  # 8 steps sweep the schedules' first 4000 batches
        "decoder": "transformer",
        "decoder_conf": {"attention_heads": 2, "linear_units": 16, "num_blocks": 1},
        "model_conf": {"ctc_weight": 0.3},
    },
}
_TINY_SYSTEMS["zipformer_transducer"] = {
    "encoder": "zipformer",
    "encoder_conf": _TINY_SYSTEMS["zipformer"]["encoder_conf"],
    "decoder": "stateless_transducer",
    "decoder_conf": {"decoder_dim": 16, "context_size": 2},
    "model": "espnet_rnnt",
    "model_conf": {"ctc_weight": 0.3, "transducer_loss": "pruned", "prune_range": 3, "simple_loss_warmup_steps": 6,
                   "joint_net_conf": {"joint_space_size": 16}},
}
TINY_SYSTEMS = tuple(_TINY_SYSTEMS)


def tiny_training_config(system: str) -> dict:
    """An ``asr_train`` YAML (as a dict) for a tiny model of ``system`` (one of :data:`TINY_SYSTEMS`), trained with
    ScaledAdam + Eden on :func:`write_random_corpus` data with :data:`TINY_TOKENS` (batches of 2, no workers)."""
    import copy

    return {
        "frontend_conf": {"n_fft": 512, "hop_length": 160, "n_mels": 20},
        **copy.deepcopy(_TINY_SYSTEMS[system]),
        "optim": "scaled_adam", "optim_conf": {"lr": 0.02},
        "scheduler": "eden", "scheduler_conf": {"lr_batches": 10, "lr_epochs": 1, "warmup_batches": 3},
        "grad_clip": float("inf"),
        "batch_type": "unsorted", "batch_size": 2, "num_workers": 0, "seed": 0,
        "best_model_criterion": [["valid", "loss", "min"]], "keep_nbest_models": 1,
        "use_tensorboard": False, "use_matplotlib": False, "num_att_plot": 0,
    }


def assert_every_parameter_gets_a_gradient(model, training_step, seeds) -> None:
    """Run ``training_step()`` (returns a scalar loss) once per seed on ``model`` in training mode, backpropagate, and
    fail naming every ``requires_grad`` parameter left without a gradient: DistributedDataParallel with ESPnet's
    default ``unused_parameters: false`` fails on the next step when any parameter has none (a zero gradient is fine).
    Python's and torch's generators are seeded with each seed, so random skips draw differently every time."""
    import random

    import torch

    model.train()
    for seed in seeds:
        random.seed(seed)
        torch.manual_seed(seed)
        model.zero_grad(set_to_none=True)
        training_step().backward()
        missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"seed {seed}: no gradient for {missing}"


def icefall_zipformer_m_keys() -> dict:
    """{key: shape} of icefall's (non-causal) Zipformer-M encoder state dict, from the research note's 731-key list;
    skips the test where the list is absent."""
    import re

    key_list = RESEARCH_DIR / "zipformer_m_state_dict.txt"
    if not key_list.is_file():
        pytest.skip(f"{key_list} is absent (it lives in ../shared/research beside the checkout)")
    keys = {}
    for line in key_list.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape, _ = line.split("\t")
            keys[key] = tuple(int(d) for d in re.findall(r"\d+", shape))
    return keys


# A tiny causal Zipformer: two stacks (50 and 25 Hz), chunks of 8 or 16 embed frames; decodes at chunk 8, left 16.
CAUSAL_TWO_STACKS = {
    "num_encoder_layers": [1, 2],
    "downsampling_factor": [1, 2],
    "encoder_dim": [16, 24],
    "encoder_unmasked_dim": [16, 16],
    "feedforward_dim": [32, 48],
    "num_heads": [2, 2],
    "query_head_dim": 8,
    "value_head_dim": 4,
    "pos_head_dim": 2,
    "pos_dim": 8,
    "cnn_module_kernel": [7, 5],
    "causal": True,
    "chunk_size": [8, 16, -1],
    "left_context_frames": [16, 32, -1],
}


def causal_two_stacks(**overrides):
    """A :data:`CAUSAL_TWO_STACKS` ZipformerEncoder (80-dim input) in eval mode, seeded, with its zero-initialised
    chunk edge scales and downsampling weights randomised so that they matter."""
    import torch

    from hybrid_encoders.encoders.zipformer import ZipformerEncoder

    torch.manual_seed(0)
    encoder = ZipformerEncoder(80, **{**CAUSAL_TWO_STACKS, **overrides})
    with torch.no_grad():
        for name, parameter in encoder.named_parameters():
            if "chunkwise_conv_scale" in name or "downsample" in name:
                parameter.normal_(0.0, 0.3)
    return encoder.eval()
