import warnings

import pytest
import torch

from hybrid_encoders.layers import autocast_state
from hybrid_encoders.layers.autocast_state import autocast_dtype


@pytest.mark.parametrize("modern_api", [True, False], ids=["torch>=2.4", "torch<2.4"])
def test_autocast_dtype_follows_the_autocast_context(monkeypatch, modern_api):
    if not modern_api:  # the per-device functions of older torch releases
        monkeypatch.setattr(autocast_state, "_DEVICE_ARGUMENT", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old functions are deprecated in current torch
        assert autocast_dtype("cpu") is None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert autocast_dtype("cpu") == torch.bfloat16
            assert autocast_dtype("cuda") is None
        with torch.autocast("cpu", dtype=torch.float16):
            assert autocast_dtype("cpu") == torch.float16
        assert autocast_dtype("cpu") is None
