import torch

from hybrid_encoders.layers import bypass as bypass_module
from hybrid_encoders.layers.bypass import BypassModule


def test_bypass_interpolates_with_learned_scale():
    bypass = BypassModule(3).eval()
    with torch.no_grad():
        bypass.bypass_scale.copy_(torch.tensor([0.0, 0.5, 2.0]))
    orig, new = torch.zeros(1, 2, 3), torch.ones(1, 2, 3)
    assert torch.equal(bypass(orig, new), torch.tensor([0.0, 0.5, 2.0]).expand(1, 2, 3))


def test_layer_skip_keeps_whole_sequences_in_training():
    torch.manual_seed(0)
    bypass = BypassModule(4, skip_rate=0.5).train()
    orig, new = torch.zeros(64, 3, 4), torch.ones(64, 3, 4)
    out = bypass(orig, new)
    skipped = (out == 0).all(dim=2).all(dim=1)
    kept = (out == 0.5).all(dim=2).all(dim=1)
    assert bool((skipped | kept).all()) and 10 < int(skipped.sum()) < 54


def test_export_form_equals_lerp(monkeypatch):
    """Exported graphs spell out x_orig + c (x - x_orig); it equals torch.lerp (which switches formulas at c = 0.5)."""
    torch.manual_seed(0)
    module = BypassModule(6).eval()
    with torch.no_grad():
        module.bypass_scale.copy_(torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0, 1.3]))
    orig, new = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    expected = torch.lerp(orig, new, module.bypass_scale)
    monkeypatch.setattr(bypass_module, "is_exporting", lambda: True)
    with torch.no_grad():
        torch.testing.assert_close(module(orig, new), expected, rtol=0, atol=1e-6)
