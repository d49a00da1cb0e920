"""The CR-CTC configs: the LibriSpeech recipe's copies equal conf/crctc/, and the time masking of every CR-CTC config
masks icefall's 18.75 % of the frames on average (lhotse's 7.5 % times --time-mask-ratio 2.5). ESPnet's own checks of
these files (parsing, model building) run in tests/recipes/test_configs_dry_run.py."""

import pytest
import yaml
from conftest import REPO_ROOT

COPIES = {
    "egs/librispeech/asr1/conf/tuning/train_asr_zipformer_m_crctc.yaml": "conf/crctc/zipformer_m_crctc.yaml",
    "egs/librispeech/asr1/conf/tuning/train_asr_zipformer_l_transducer_crctc.yaml":
        "conf/crctc/zipformer_l_pruned_rnnt_crctc.yaml",
    "egs/aishell/asr1/conf/decode_asr_ctc.yaml": "conf/crctc/decode_ctc.yaml",
}
TRAINING_CONFIGS = [
    "conf/crctc/zipformer_m_crctc.yaml",
    "conf/crctc/zipformer_l_pruned_rnnt_crctc.yaml",
    "egs/aishell/asr1/conf/tuning/train_asr_zipformer_m_crctc.yaml",
]


@pytest.mark.parametrize("copy, source", COPIES.items())
def test_recipe_copies_equal_the_reference_configs(copy, source):
    assert (REPO_ROOT / copy).read_bytes() == (REPO_ROOT / source).read_bytes()


@pytest.mark.parametrize("path", TRAINING_CONFIGS)
def test_time_masking_is_icefalls_cr_ctc_fraction(path):
    config = yaml.safe_load((REPO_ROOT / path).read_text())
    assert config["model_conf"]["cr_loss_scale"] > 0
    specaug = config["specaug_conf"]
    low, high = specaug["time_mask_width_ratio_range"]
    # widths uniform in [low, high) of the padded length, num_time_mask of them: the expected masked fraction
    assert specaug["num_time_mask"] * (low + high) / 2 == pytest.approx(0.1875)
