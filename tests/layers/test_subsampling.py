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


def test_training_values_and_gradients_match_the_plain_convolutions():
    """The training path (im2col first convolution, channels-last frequency-major flatten with reordered Linear
    columns) against ``conv2d`` and the channel-major flatten, in float64."""
    torch.manual_seed(4)
    module = build_subsampling("dw_striding", 80, 12, channels=5).double()
    x = torch.randn(2, 37, 80, dtype=torch.float64)
    ys, _ = module(x, torch.tensor([37, 37]))
    ys.square().sum().backward()
    got = {name: p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad()
    h = torch.relu(torch.nn.functional.conv2d(x.unsqueeze(1), module.conv1.weight, module.conv1.bias, 2, 1))
    h = torch.nn.functional.conv2d(h, module.depthwise.weight, module.depthwise.bias, 2, 1, groups=5)
    h = torch.relu(torch.nn.functional.conv2d(h, module.pointwise.weight, module.pointwise.bias))
    flat = h.permute(0, 2, 1, 3).reshape(2, h.size(2), -1)  # index c * F' + f
    reference = flat @ module.out.weight.T + module.out.bias
    reference.square().sum().backward()
    torch.testing.assert_close(ys, reference)
    for name, p in module.named_parameters():
        torch.testing.assert_close(got[name], p.grad, msg=name)


def _padded_batch(lengths, input_size=80):
    """Random (B, max(lengths), F) features with loud garbage in the padding."""
    xs = torch.randn(len(lengths), max(lengths), input_size)
    for b, length in enumerate(lengths):
        xs[b, length:] *= 100
    return xs, torch.tensor(lengths)


@pytest.mark.parametrize("chunk_frames", [1, 7, 100])
def test_chunked_inference_equals_unchunked(chunk_frames):
    torch.manual_seed(2)
    chunked = build_subsampling("dw_striding", 80, 8, channels=4, chunk_frames=chunk_frames).eval()
    whole = build_subsampling("dw_striding", 80, 8, channels=4, chunk_frames=0).eval()
    whole.load_state_dict(chunked.state_dict())
    # input lengths giving fewer output frames than one chunk, exactly one, one more, several, odd and even
    out_frames = sorted({1, 2, 3, chunk_frames - 1, chunk_frames, chunk_frames + 1, 2 * chunk_frames + 3} - {0})
    lengths = sorted({n for k in out_frames for n in (4 * k - 3, 4 * k - 2, 4 * k - 1, 4 * k) if n > 0})
    for length in lengths:
        # the longest utterance first, then shorter ones ending inside other chunks
        xs, lens = _padded_batch([length, max(1, length - 5), max(1, length // 2 + 1)])
        with torch.no_grad():
            got, got_lens = chunked(xs, lens)
            want, want_lens = whole(xs, lens)
        assert got.shape == want.shape == (3, _expected_length(length), 8)
        assert torch.equal(got_lens, want_lens)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0, msg=f"length {length}")


def _record_conv1_input_frames(monkeypatch, module):
    """Make ``module`` log the number of input frames of every first-convolution call; returns the log."""
    frames = []
    first_conv = module._first_conv

    def recording_first_conv(x, **options):
        frames.append(x.size(2))
        return first_conv(x, **options)

    monkeypatch.setattr(module, "_first_conv", recording_first_conv)
    return frames


def test_chunking_runs_only_without_autograd(monkeypatch):
    torch.manual_seed(3)
    module = build_subsampling("dw_striding", 80, 8, channels=4, chunk_frames=7)
    reference = build_subsampling("dw_striding", 80, 8, channels=4, chunk_frames=0)
    reference.load_state_dict(module.state_dict())
    conv1_input_frames = _record_conv1_input_frames(monkeypatch, module)
    xs, lens = _padded_batch([121, 90])  # 31 output frames: chunks of 7, 7, 7, 7, 3
    with torch.inference_mode():
        module(xs, lens)
    assert conv1_input_frames == [31, 31, 31, 31, 15]  # 4 * chunk + 3 input frames each

    conv1_input_frames.clear()
    ys, _ = module(xs, lens)
    assert conv1_input_frames == [121]  # one pass over the whole input while training
    ys.square().sum().backward()
    reference(xs, lens)[0].square().sum().backward()
    for (name, got), want in zip(module.named_parameters(), reference.parameters()):
        assert got.grad is not None and got.grad.abs().sum() > 0, name
        torch.testing.assert_close(got.grad, want.grad, msg=name)


@pytest.mark.parametrize("chunk_frames", [0, None])
def test_chunk_frames_zero_or_none_disables_chunking(monkeypatch, chunk_frames):
    module = build_subsampling("dw_striding", 80, 8, channels=4, chunk_frames=chunk_frames).eval()
    conv1_input_frames = _record_conv1_input_frames(monkeypatch, module)
    with torch.no_grad():
        module(*_padded_batch([121, 90]))
    assert conv1_input_frames == [121]


@pytest.mark.parametrize("chunk_frames", [-1, 2.5, "100"])
def test_rejects_bad_chunk_frames(chunk_frames):
    with pytest.raises(ValueError, match="chunk_frames"):
        build_subsampling("dw_striding", 80, 8, channels=4, chunk_frames=chunk_frames)
