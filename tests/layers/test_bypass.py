import torch

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
