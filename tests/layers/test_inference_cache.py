"""cached_until_changed: reused without autograd while the parameters are unchanged, recomputed after any change."""

import torch

from hybrid_encoders.layers.chunk_causal_conv import ChunkCausalDepthwiseConv1d
from hybrid_encoders.layers.inference_cache import cached_until_changed


def test_recomputed_after_in_place_updates_and_moves_never_with_autograd():
    module = torch.nn.Linear(3, 2)
    calls = []

    def compute():
        calls.append(1)
        return module.weight.sum(1)

    with torch.no_grad():
        first = cached_until_changed(module, "_cache", (module.weight,), compute)
        assert cached_until_changed(module, "_cache", (module.weight,), compute) is first and len(calls) == 1
        module.weight.add_(1.0)
        updated = cached_until_changed(module, "_cache", (module.weight,), compute)
        torch.testing.assert_close(updated, module.weight.sum(1))
        module.double()
        assert cached_until_changed(module, "_cache", (module.weight,), compute).dtype == torch.float64
    assert len(calls) == 3
    with_grad = cached_until_changed(module, "_cache", (module.weight,), compute)
    assert with_grad.requires_grad and len(calls) == 4
    assert "_cache" not in module.state_dict()


def test_chunk_scale_follows_its_parameter():
    conv = ChunkCausalDepthwiseConv1d(2, 3)
    with torch.no_grad():
        assert torch.equal(conv.chunk_scale(4), torch.ones(2, 4))
        conv.chunkwise_conv_scale.fill_(0.5)
        assert torch.equal(conv.chunk_scale(4), torch.tensor([[1.5, 2.0, 2.0, 1.5]] * 2))
