"""Our components inside ESPnet's own, unmodified entry points: --help, the config dry-run, Speech2Text rebuilds."""

import importlib.metadata
import subprocess
import sys

import pytest
import torch
import yaml

ENCODERS = {  # the smallest preset of each encoder
    "squeezeformer": {"preset": "xs"},
    "hybridformer": {"preset": "s"},
    "zipformer": {"preset": "s"},
}
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "<sos/eos>"]


def our_entry_points():
    dist = importlib.metadata.distribution("hybrid-encoders")
    return [ep for ep in dist.entry_points if ep.group.startswith("espnet2.")]


def write_config(directory, encoder, **extra):
    config = {
        "encoder": encoder,
        "encoder_conf": ENCODERS[encoder],
        "model_conf": {"ctc_weight": 1.0},
        "frontend_conf": {"n_fft": 512, "hop_length": 160},
        "optim": "scaled_adam",
        "optim_conf": {"lr": 0.01},
        "scheduler": "eden",
        "scheduler_conf": {"lr_batches": 100, "lr_epochs": 2},
        "grad_clip": float("inf"),
        "token_list": TOKENS,
        **extra,
    }
    path = directory / f"{encoder}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_asr_train_help_lists_every_registered_component():
    result = subprocess.run(
        [sys.executable, "-m", "espnet2.bin.asr_train", "--help"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    help_text = " ".join(result.stdout.split())
    for entry_point in our_entry_points():
        option = {"espnet2.optimizers": "--optim", "espnet2.schedulers": "--scheduler"}.get(
            entry_point.group, "--" + entry_point.group.split(".")[-1]
        )
        choices = help_text.split(f"{option} {{", 1)[1].split("}", 1)[0].split(",")
        assert entry_point.name in choices, f"{entry_point.name} missing from {option} choices {choices}"


def test_config_dry_run_builds_our_encoder_optimizer_and_scheduler(tmp_path):
    config = write_config(tmp_path, "squeezeformer", specaug="adaptive_specaug")
    out = tmp_path / "exp"
    result = subprocess.run(
        [sys.executable, "-m", "espnet2.bin.asr_train", "--config", str(config), "--dry_run", "true",
         "--iterator_type", "none", "--output_dir", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["encoder"], saved["optim"], saved["scheduler"], saved["specaug"]) == (
        "squeezeformer", "scaled_adam", "eden", "adaptive_specaug")
    assert saved["grad_clip"] == float("inf")
    assert "SqueezeformerEncoder" in result.stderr and "ScaledAdam" in result.stderr


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_speech2text_rebuilds_a_saved_model(tmp_path, encoder):
    from espnet2.bin.asr_inference import Speech2Text
    from espnet2.tasks.asr import ASRTask

    config_path = write_config(tmp_path, encoder)
    parser = ASRTask.get_parser()
    args = parser.parse_args(["--config", str(config_path), "--output_dir", str(tmp_path)])
    torch.manual_seed(0)
    model = ASRTask.build_model(args).eval()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), tmp_path / "model.pth")

    speech2text = Speech2Text(str(tmp_path / "config.yaml"), str(tmp_path / "model.pth"), ctc_weight=1.0, beam_size=1)
    rebuilt = speech2text.asr_model
    assert type(rebuilt.encoder) is type(model.encoder)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    speech = torch.randn(1, 16000)
    lengths = torch.tensor([16000])
    with torch.no_grad():
        expected, expected_lens = model.encode(speech, lengths)
        actual, actual_lens = rebuilt.encode(speech, lengths)
    assert torch.equal(expected_lens, actual_lens)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
    assert len(speech2text(speech[0].numpy())) >= 1
