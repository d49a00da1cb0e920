import math

import pytest
import torch

from hybrid_encoders.layers.subsampling import (
    SUBSAMPLING_KINDS,
    DepthwiseStridingSubsampling,
    build_subsampling,
)


def _expected_length(length: int) -> int:
    return math.ceil(math.ceil(length / 2) / 2)


def test_factory_builds_registered_kind_and_rejects_unknown():
    assert SUBSAMPLING_KINDS["dw_striding"] is DepthwiseStridingSubsampling
    module = build_subsampling("dw_striding", 80, 32, channels=8)
    assert isinstance(module, DepthwiseStridingSubsampling)
    assert module.out.in_features == 8 * 20  # 80 -> 40 -> 20 frequency bins
    with pytest.raises(ValueError, match="subsampling must be one of"):
        build_subsampling("conv2d9", 80, 32)


def test_output_lengths_shapes_and_min_length():
    module = build_subsampling("dw_striding", 80, 16, channels=4).eval()
    lengths = torch.arange(1, 301)
    assert module.output_lengths(lengths).tolist() == [_expected_length(n) for n in range(1, 301)]
    assert module.min_input_length == 1
    for length in (1, 2, 3, 4, 5, 7, 8, 63, 64, 299, 300):
        ys, out = module(torch.randn(1, length, 80), torch.tensor([length]))
        assert ys.shape == (1, _expected_length(length), 16)
        assert out.tolist() == [_expected_length(length)]


def test_odd_input_size_is_supported():
    module = build_subsampling("dw_striding", 83, 16, channels=4)
    ys, _ = module(torch.randn(2, 20, 83), torch.tensor([20, 11]))
    assert module.out.in_features == 4 * 21  # 83 -> 42 -> 21
    assert ys.shape == (2, 5, 16)


def test_padding_never_leaks():
    torch.manual_seed(0)
    module = build_subsampling("dw_striding", 80, 16, channels=6).eval()
    lengths = [37, 20, 9]
    alone = [torch.randn(1, n, 80) for n in lengths]
    batch = torch.randn(3, 37, 80) * 100  # loud garbage in the padding
    for b, x in enumerate(alone):
        batch[b, : lengths[b]] = x[0]
    with torch.no_grad():
        ys, out = module(batch, torch.tensor(lengths))
        for b, x in enumerate(alone):
            single, single_len = module(x, torch.tensor([lengths[b]]))
            assert out[b] == single_len[0]
            torch.testing.assert_close(ys[b, : out[b]], single[0], atol=1e-5, rtol=0)


def test_matches_an_unmasked_reference_on_unpadded_input():
    torch.manual_seed(1)
    module = build_subsampling("dw_striding", 80, 12, channels=5).eval()
    x = torch.randn(2, 29, 80)
    with torch.no_grad():
        ys, _ = module(x, torch.tensor([29, 29]))
        h = torch.relu(torch.nn.functional.conv2d(x.unsqueeze(1), module.conv1.weight, module.conv1.bias, 2, 1))
        h = torch.nn.functional.conv2d(h, module.depthwise.weight, module.depthwise.bias, 2, 1, groups=5)
        h = torch.relu(torch.nn.functional.conv2d(h, module.pointwise.weight, module.pointwise.bias))
        flat = h.permute(0, 2, 1, 3).reshape(2, h.size(2), -1)  # index c * F' + f
        reference = flat @ module.out.weight.T + module.out.bias
    torch.testing.assert_close(ys, reference, atol=1e-5, rtol=0)
