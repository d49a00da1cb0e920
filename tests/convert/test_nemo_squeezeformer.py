import io
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

from hybrid_encoders.cli import main
from hybrid_encoders.convert import nemo_squeezeformer
from hybrid_encoders.encoders.squeezeformer import SqueezeformerEncoder

from conftest import golden_path

GOLDEN_FILE = "squeezeformer_nemo_tiny.pt"


@pytest.fixture(scope="module")
def golden():
    return torch.load(golden_path(GOLDEN_FILE), map_location="cpu")


def _load_converted(out_dir: Path) -> SqueezeformerEncoder:
    """Build the encoder from the written encoder_conf and load encoder.pth the way --init_param does."""
    conf = yaml.safe_load((out_dir / "encoder_conf.yaml").read_text())
    assert conf["encoder"] == "squeezeformer"
    encoder = SqueezeformerEncoder(80, **conf["encoder_conf"]).eval()
    state = torch.load(out_dir / "encoder.pth", map_location="cpu")
    assert all(key.startswith("encoder.") for key in state)
    encoder.load_state_dict({key[len("encoder.") :]: value for key, value in state.items()}, strict=True)
    return encoder


def _assert_reproduces(encoder, golden):
    with torch.no_grad():
        ys, olens, _ = encoder(golden["input_BTF"], golden["input_lengths"])
    assert olens.tolist() == golden["output_lengths"].tolist()
    assert ys.shape == golden["output_BTD"].shape
    for b, length in enumerate(olens.tolist()):
        torch.testing.assert_close(ys[b, :length], golden["output_BTD"][b, :length], atol=1e-5, rtol=0)


def test_cli_converts_golden_and_reproduces_nemo_outputs(golden, tmp_path):
    assert main(["convert", "nemo-squeezeformer", "--checkpoint", str(golden_path(GOLDEN_FILE)), "--out", str(tmp_path)]) == 0
    _assert_reproduces(_load_converted(tmp_path), golden)


def test_dot_nemo_archive_layout(golden, tmp_path):
    config = golden["config"]
    model_config = {
        "preprocessor": {"features": config["feat_in"]},
        "encoder": {**config, "feat_in": "${model.preprocessor.features}", "subsampling": "dw_striding",
                    "conv_norm_type": "batch_norm", "dropout_att": 0.1},
    }
    weights = {f"encoder.{key}": value for key, value in golden["state_dict"].items()}
    weights["decoder.decoder_layers.0.weight"] = torch.zeros(129, 64, 1)  # the CTC head is not the encoder's
    archive = tmp_path / "model.nemo"
    with tarfile.open(archive, "w") as tar:
        for name, payload in (
            ("./model_config.yaml", yaml.safe_dump(model_config).encode()),
            ("./model_weights.ckpt", _saved(weights)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    nemo_squeezeformer.convert(str(archive), str(tmp_path / "out"))
    _assert_reproduces(_load_converted(tmp_path / "out"), golden)


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_key_mapping_covers_every_encoder_parameter(golden):
    converted = nemo_squeezeformer.convert_state_dict(golden["state_dict"])
    input_size, conf = nemo_squeezeformer.encoder_config_from_nemo(golden["config"])
    encoder = SqueezeformerEncoder(input_size, **conf)
    assert set(converted) == set(encoder.state_dict())
    assert nemo_squeezeformer.rename_key("layers.3.conv.batch_norm.running_var") == (
        "encoders.3.conv_module.depthwise.norm.running_var"
    )


@pytest.mark.parametrize(
    "option, key",
    [({"subsampling": "striding"}, "subsampling"), ({"conv_norm_type": "layer_norm"}, "conv_norm_type"),
     ({"feat_out": 32}, "feat_out")],
)
def test_unsupported_nemo_options_are_named(option, key):
    base = {"feat_in": 80, "d_model": 64, "n_layers": 6, "n_heads": 4, "time_reduce_idx": 2}
    with pytest.raises(ValueError, match=key):
        nemo_squeezeformer.encoder_config_from_nemo({**base, **option})


def test_mismatched_weights_fail_before_writing(golden, tmp_path):
    state = dict(golden["state_dict"])
    del state["pre_ln.weight"]
    path = tmp_path / "broken.pt"
    torch.save({"state_dict": state, "config": golden["config"]}, path)
    with pytest.raises(ValueError, match="pre_ln.weight"):
        nemo_squeezeformer.convert(str(path), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
