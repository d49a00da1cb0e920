"""``hybrid-encoders reparameterize`` on a saved ESPnet experiment, loaded back by ESPnet's own Speech2Text."""

import pytest
import torch
import yaml
from torch import nn

from hybrid_encoders.cli import main

from conftest import randomise_batch_norms

TOKENS = ["<blank>", "<unk>", "a", "b", "c", "<sos/eos>"]
ENCODER_CONF = {
    "output_size": 32,
    "attention_heads": 2,
    "num_blocks": 4,
    "linear_units": 64,
    "nsr_rep_list": [0, 2, 3, 4],  # identity, even and odd branches
    "nsr_rep_alphas": [0.4, 0.3, 0.2, 0.1],
}


def _save_experiment(directory, encoder_conf):
    """Build an ASR model through ESPnet's ASRTask from a config dict and save it like asr_train does."""
    from espnet2.tasks.asr import ASRTask

    config = {
        "encoder": "hybridformer",
        "encoder_conf": encoder_conf,
        "model_conf": {"ctc_weight": 0.5},
        "decoder": "transformer",
        "decoder_conf": {"attention_heads": 2, "linear_units": 32, "num_blocks": 1},
        "frontend_conf": {"n_fft": 512, "hop_length": 160},
        "token_list": TOKENS,
    }
    (directory / "train.yaml").write_text(yaml.safe_dump(config))
    args = ASRTask.get_parser().parse_args(["--config", str(directory / "train.yaml"), "--output_dir", str(directory)])
    torch.manual_seed(0)
    model = ASRTask.build_model(args)
    randomise_batch_norms(model)  # a "trained" model: non-trivial BatchNorm statistics and affine parameters
    (directory / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), directory / "model.pth")
    return model.eval()


@pytest.mark.slow
def test_round_trip_through_espnet_speech2text(tmp_path):
    from espnet2.bin.asr_inference import Speech2Text

    model = _save_experiment(tmp_path, ENCODER_CONF)
    out = tmp_path / "deploy"
    assert main(["reparameterize", "--config", str(tmp_path / "config.yaml"), "--model", str(tmp_path / "model.pth"),
                 "--out", str(out)]) == 0

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["encoder_conf"]["nsr_mode"] == "deploy"
    assert {k: v for k, v in saved.items() if k != "encoder_conf"} == {
        k: v for k, v in yaml.safe_load((tmp_path / "config.yaml").read_text()).items() if k != "encoder_conf"
    }
    speech2text = Speech2Text(str(out / "config.yaml"), str(out / "model.pth"), ctc_weight=0.5, beam_size=2)
    deployed = speech2text.asr_model
    checkpoint = torch.load(out / "model.pth", map_location="cpu")
    assert deployed.state_dict().keys() == checkpoint.keys()  # ESPnet's strict=False load left nothing out
    assert all(block.conv_module.depthwise.mode == "deploy" for block in deployed.encoder.encoders)
    assert not any(isinstance(module, nn.BatchNorm1d) for module in deployed.encoder.modules())

    speech = torch.randn(2, 24000)
    lengths = torch.tensor([24000, 17000])
    with torch.no_grad():
        expected, expected_lens = model.encode(speech, lengths)
        actual, actual_lens = deployed.encode(speech, lengths)
    assert torch.equal(expected_lens, actual_lens)
    for b, length in enumerate(expected_lens.tolist()):
        assert (actual[b, :length] - expected[b, :length]).abs().max().item() <= 1e-4
    assert len(speech2text(speech[0].numpy())) >= 1  # decodes


def _run(tmp_path, config, model_path):
    out = tmp_path / "out"
    return main(["reparameterize", "--config", str(config), "--model", str(model_path), "--out", str(out)]), out


def test_input_errors_name_the_option(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"encoder": "conformer", "encoder_conf": {}}))
    (tmp_path / "model.pth").write_bytes(b"")
    assert _run(tmp_path, config, tmp_path / "model.pth")[0] == 2
    assert "'conformer'" in capsys.readouterr().err
    assert _run(tmp_path, tmp_path / "missing.yaml", tmp_path / "model.pth")[0] == 2
    assert "--config: no such file" in capsys.readouterr().err
    config.write_text(yaml.safe_dump({"encoder": "hybridformer", "encoder_conf": {}}))
    assert _run(tmp_path, config, tmp_path / "absent.pth")[0] == 2
    assert "--model: no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_nothing_to_fold_and_mismatched_checkpoint(tmp_path, capsys):
    model_dir = tmp_path / "off"
    model_dir.mkdir()
    _save_experiment(model_dir, {**ENCODER_CONF, "nsr_mode": "off"})
    code, out = _run(tmp_path, model_dir / "config.yaml", model_dir / "model.pth")
    assert code == 2 and "nothing to re-parameterise" in capsys.readouterr().err and not out.exists()

    other_dir = tmp_path / "other"
    other_dir.mkdir()
    _save_experiment(other_dir, ENCODER_CONF)
    code, out = _run(tmp_path, other_dir / "config.yaml", model_dir / "model.pth")  # checkpoint of another config
    assert code == 2 and "does not fit" in capsys.readouterr().err and not out.exists()
