"""Zipformer presets: parameter counts equal icefall's and the conf/ YAML files equal PRESETS."""

from pathlib import Path

import pytest
import yaml

from hybrid_encoders.encoders.zipformer import ZipformerEncoder

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "zipformer"

# icefall's encoder_embed + encoder counts (research note §9) minus the unused legacy per-layer bypass_scale
# parameters that our encoder leaves out (2,944 / 5,760 / 9,344).
ICEFALL_COUNTS = {"s": (21_989_779, 2_944), "m": (63_994_103, 5_760), "l": (146_625_594, 9_344)}


@pytest.mark.parametrize("preset", ["s", "m", "l"])
def test_parameter_counts_equal_icefall(preset):
    encoder = ZipformerEncoder(80, preset=preset)
    icefall_total, legacy = ICEFALL_COUNTS[preset]
    assert sum(p.numel() for p in encoder.parameters()) == icefall_total - legacy
    # the legacy parameters are one C-vector per layer
    config = encoder.config
    assert legacy == sum(n * c for n, c in zip(config["num_encoder_layers"], config["encoder_dim"]))
    assert encoder.output_size() == max(config["encoder_dim"])


@pytest.mark.parametrize("preset", ["s", "m", "l"])
def test_conf_files_equal_presets(preset):
    written = yaml.safe_load((CONF_DIR / f"{preset}.yaml").read_text())
    assert written["encoder"] == "zipformer"
    assert written["encoder_conf"] == ZipformerEncoder.build_config(preset)
    assert ZipformerEncoder.build_config(None, **written["encoder_conf"]) == ZipformerEncoder.build_config(preset)
