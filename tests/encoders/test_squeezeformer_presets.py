from pathlib import Path

import pytest
import torch
import yaml

from hybrid_encoders.encoders.squeezeformer import SqueezeformerEncoder

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "squeezeformer"

# Paper sizes 9.0 / 18.6 / 28.2 / 55.6 / 125.1 / 236.3 M = encoder + Linear(d, 128) CTC head; the exact counts are
# those of the TF model / NeMo port without BatchNorm statistics (research note Sec. 6.1).
PAPER_COUNTS = {
    "xs": 9_031_808,
    "s": 18_565_640,
    "sm": 28_184_704,
    "m": 55_621_856,
    "ml": 125_025_408,
    "l": 236_253_568,
}


@pytest.mark.parametrize("preset", sorted(PAPER_COUNTS))
def test_parameter_count_with_ctc_head_equals_paper(preset):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        encoder = SqueezeformerEncoder(80, preset=preset)
    d_model = encoder.output_size()
    total = sum(p.numel() for p in encoder.parameters()) + d_model * 128 + 128
    assert total == PAPER_COUNTS[preset]


@pytest.mark.parametrize("preset", sorted(PAPER_COUNTS))
def test_conf_file_equals_preset(preset):
    content = yaml.safe_load((CONF_DIR / f"{preset}.yaml").read_text())
    assert content["encoder"] == "squeezeformer"
    assert content["encoder_conf"] == SqueezeformerEncoder.build_config(preset)
    with torch.device("meta"):
        from_file = SqueezeformerEncoder(80, **content["encoder_conf"])
        from_preset = SqueezeformerEncoder(80, preset=preset)
    assert [(n, p.shape) for n, p in from_file.named_parameters()] == [
        (n, p.shape) for n, p in from_preset.named_parameters()
    ]


def test_paper_unet_indices_and_overrides():
    expected = {"xs": (7, 15), "s": (8, 17), "sm": (7, 15), "m": (9, 19), "ml": (8, 17), "l": (10, 21)}
    for preset, indices in expected.items():
        config = SqueezeformerEncoder.build_config(preset)
        assert (config["time_reduce_idx"], config["time_recover_idx"]) == indices
        assert config["linear_units"] == 4 * config["output_size"]
    config = SqueezeformerEncoder.build_config("SM", dropout_rate=0.2, num_blocks=12)
    assert config["dropout_rate"] == 0.2 and config["output_size"] == 256
    assert (config["time_reduce_idx"], config["time_recover_idx"]) == (5, 11)  # re-derived for 12 blocks
