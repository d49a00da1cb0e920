"""icefall Zipformer import: golden equivalence with icefall's own outputs, key mapping, strict loading."""

from pathlib import Path

import pytest
import torch
import yaml

from hybrid_encoders.convert.icefall_zipformer import (
    LEGACY_KEY,
    convert,
    convert_state_dict,
    load_icefall_encoder,
)
from hybrid_encoders.encoders.zipformer import ZipformerEncoder
from hybrid_encoders.layers.masking import make_pad_mask

from conftest import causal_two_stacks, golden_path, icefall_zipformer_m_keys


@pytest.fixture(scope="module")
def golden():
    return torch.load(golden_path("zipformer_icefall_tiny.pt"))


def _network(encoder, x, x_lens):
    """Embed + stacks on ``x`` as it is. icefall's outputs depend on the padding's values (the golden batch has random
    padding); ``encoder.forward`` zeroes the padding first (padding never leaks), so the network is compared here."""
    embed, embed_lens = encoder.encoder_embed(x, x_lens)
    return encoder.encoder(embed, embed_lens, make_pad_mask(embed_lens, embed.size(1)))


def test_golden_equivalence_embed_and_encoder(golden):
    encoder, conf = load_icefall_encoder(golden["state_dict"], icefall_args=golden["config"])
    encoder.eval()
    x, x_lens = golden["input"]["x"], golden["input"]["x_lens"]
    expected = golden["output"]
    with torch.no_grad():
        embed, embed_lens = encoder.encoder_embed(x, x_lens)
        out, olens = _network(encoder, x, x_lens)
        public, public_lens, _ = encoder(x, x_lens)
        zero_padded = x.masked_fill(make_pad_mask(x_lens, x.size(1)).unsqueeze(-1), 0.0)
        expected_public, _ = _network(encoder, zero_padded, x_lens)
    assert embed_lens.tolist() == expected["embed_lens"].tolist()
    torch.testing.assert_close(embed, expected["embed_out"], rtol=0, atol=1e-5)
    assert olens.tolist() == public_lens.tolist() == expected["encoder_out_lens"].tolist()
    assert out.shape == expected["encoder_out"].shape
    torch.testing.assert_close(out, expected["encoder_out"], rtol=0, atol=1e-5)
    # the public forward: icefall's network on the zero-padded batch; the full-length utterance is icefall's exactly
    torch.testing.assert_close(public, expected_public, rtol=0, atol=1e-6)
    torch.testing.assert_close(public[0], expected["encoder_out"][0], rtol=0, atol=1e-5)


def test_converter_writes_espnet_loadable_files(golden, tmp_path):
    checkpoint = tmp_path / "epoch-1.pt"
    heads = {"joiner.output_linear.weight": torch.zeros(3, 4), "decoder.embedding.weight": torch.zeros(5, 4)}
    torch.save({"model": {**golden["state_dict"], **heads}, "batch_idx_train": 1234}, checkpoint)
    with pytest.raises(ValueError, match="preset 'm'"):
        convert(str(checkpoint), str(tmp_path / "wrong"), preset="m")
    written = convert(str(checkpoint), str(tmp_path / "out"))
    state = torch.load(written["weights"])
    assert all(key.startswith("encoder.") for key in state) and int(state["encoder.batch_count"]) == 1234
    snippet = yaml.safe_load(Path(written["config"]).read_text())
    assert snippet["encoder"] == "zipformer"
    encoder = ZipformerEncoder(80, **snippet["encoder_conf"])
    encoder.load_state_dict({key[len("encoder.") :]: value for key, value in state.items()}, strict=True)
    dropped = [key for key in golden["state_dict"] if LEGACY_KEY.match(key)]
    assert len(dropped) == 7  # one legacy bypass_scale per layer of the tiny model
    for key, value in golden["state_dict"].items():
        if key not in dropped:
            assert torch.equal(state["encoder." + key], value), key


def test_m_key_mapping_is_one_to_one_with_icefall_key_list():
    icefall = icefall_zipformer_m_keys()
    ours = {key: tuple(value.shape) for key, value in ZipformerEncoder(80, preset="m").state_dict().items()}
    converted, dropped = convert_state_dict({key: torch.empty(shape) for key, shape in icefall.items()})
    assert len(dropped) == 16 and all(key.endswith(".bypass_scale") and ".bypass." not in key for key in dropped)
    assert {key: tuple(value.shape) for key, value in converted.items()} == {
        key: shape for key, shape in ours.items() if key != "batch_count"
    }


def test_causal_flag_must_match_the_checkpoint_and_non_zipformer_checkpoints_are_rejected(golden):
    with pytest.raises(ValueError, match="--causal given, but the checkpoint has no chunk-causal convolutions"):
        load_icefall_encoder(golden["state_dict"], icefall_args=golden["config"], causal=True)
    causal = dict(golden["state_dict"])
    causal["encoder.encoders.0.layers.0.conv_module1.depthwise_conv.chunkwise_conv.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="streaming \\(causal\\) model: pass --causal"):
        load_icefall_encoder(causal, causal=False)
    with pytest.raises(ValueError, match="Zipformer"):
        load_icefall_encoder({"model": {"encoder.layers.0.weight": torch.zeros(1)}})


def test_cli_converts_a_causal_checkpoint_with_its_chunk_lists(tmp_path, capsys):
    from hybrid_encoders.cli import main

    original = causal_two_stacks(pos_head_dim=4)  # our names are icefall's (no legacy bypass_scale here)
    checkpoint = tmp_path / "epoch-30.pt"
    torch.save({"model": {k: v for k, v in original.state_dict().items() if k != "batch_count"}}, checkpoint)
    base = ["convert", "icefall-zipformer", "--checkpoint", str(checkpoint)]
    assert main(base + ["--out", str(tmp_path / "no_flag")]) == 1
    assert "pass --causal" in capsys.readouterr().out
    assert main(base + ["--out", str(tmp_path / "bad"), "--causal", "--chunk-size", "16,x"]) == 1
    assert "--chunk-size must be comma-separated integers" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(base + ["--out", str(out), "--causal", "--chunk-size", "32,-1", "--left-context-frames", "64"]) == 0
    conf = yaml.safe_load((out / "encoder_conf.yaml").read_text())["encoder_conf"]
    assert conf["causal"] is True and conf["chunk_size"] == [32, -1] and conf["left_context_frames"] == 64
    encoder = ZipformerEncoder(80, **conf).eval()
    state = torch.load(out / "encoder.pth")
    encoder.load_state_dict({key[len("encoder.") :]: value for key, value in state.items()}, strict=True)
    assert encoder.streaming_geometry().chunk_size == 32
    with pytest.warns(UserWarning, match="not trained"):  # its training lists were 8, 16, -1 and 16, 32, -1
        original.set_streaming(32, 64)
    xs = torch.randn(1, 150, 80)
    with torch.no_grad():
        torch.testing.assert_close(encoder(xs, torch.tensor([150]))[0], original(xs, torch.tensor([150]))[0])


def test_cli_convert_icefall_zipformer(golden, tmp_path, capsys):
    from hybrid_encoders.cli import main

    checkpoint = _save(golden, tmp_path)
    assert main(["convert", "icefall-zipformer", "--checkpoint", checkpoint, "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "encoder.pth").is_file() and (tmp_path / "a" / "encoder_conf.yaml").is_file()
    args = ["convert", "icefall-zipformer", "--checkpoint", checkpoint, "--preset", "s", "--out", str(tmp_path)]
    assert main(args) == 1
    assert "does not match preset 's'" in capsys.readouterr().out


def test_espnet_init_param_loading_reproduces_icefall(golden, tmp_path):
    from espnet2.torch_utils.load_pretrained_model import load_pretrained_model

    written = convert(_save(golden, tmp_path), str(tmp_path / "out"))
    conf = yaml.safe_load(Path(written["config"]).read_text())["encoder_conf"]
    model = torch.nn.Module()
    model.encoder = ZipformerEncoder(80, **conf)
    load_pretrained_model(str(written["weights"]), model, ignore_init_mismatch=False, map_location="cpu")
    with torch.no_grad():
        out, olens = _network(model.encoder.eval(), golden["input"]["x"], golden["input"]["x_lens"])
    torch.testing.assert_close(out, golden["output"]["encoder_out"], rtol=0, atol=1e-5)


def _save(golden, tmp_path) -> str:
    path = tmp_path / "pretrained.pt"
    torch.save({"model": golden["state_dict"]}, path)
    return str(path)


def test_full_training_checkpoints_with_python_objects_are_refused_clearly(golden, tmp_path):
    path = tmp_path / "epoch-30.pt"
    torch.save({"model": golden["state_dict"], "params": {"exp_dir": Path("/tmp/exp")}}, path)
    with pytest.raises(ValueError, match="export.py"):
        convert(str(path), str(tmp_path / "out"))
