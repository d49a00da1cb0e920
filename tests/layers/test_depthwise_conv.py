import pytest
import torch
from torch import nn

from hybrid_encoders.layers.depthwise_conv import (
    depthwise_conv1d,
    depthwise_conv1d_weight_grad,
    depthwise_conv2d_weight_grad,
    same_depthwise_conv1d,
    same_depthwise_conv2d,
)


def _naive(x, weight, bias, left_pad, right_pad):
    """y[b, c, t] = bias[c] + sum_i weight[c, 0, i] * x[b, c, t - left_pad + i], zero outside the sequence."""
    batch, channels, length = x.shape
    taps = weight.size(-1)
    out_length = length + left_pad + right_pad - taps + 1
    y = torch.zeros(batch, channels, out_length, dtype=torch.float64)
    for t in range(out_length):
        for i in range(taps):
            source = t - left_pad + i
            if 0 <= source < length:
                y[:, :, t] += weight[:, 0, i].double() * x[:, :, source].double()
    if bias is not None:
        y += bias.double()[:, None]
    return y


@pytest.mark.parametrize("taps, left_pad, right_pad", [(7, 3, 3), (4, 2, 1), (2, 1, 0), (1, 0, 0), (5, 4, 1)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_the_definition_for_sequence_views_and_contiguous_input(taps, left_pad, right_pad, with_bias):
    torch.manual_seed(taps)
    sequence = torch.randn(2, 9, 5)  # (B, T, C): the layout the convolution modules transpose into (B, C, T)
    weight = torch.randn(5, 1, taps)
    bias = torch.randn(5) if with_bias else None
    expected = _naive(sequence.transpose(1, 2), weight, bias, left_pad, right_pad).float()
    for x in (sequence.transpose(1, 2), sequence.transpose(1, 2).contiguous()):
        y = depthwise_conv1d(x, weight, bias, left_pad, right_pad)
        assert y.shape == expected.shape
        torch.testing.assert_close(y, expected, atol=1e-5, rtol=0)


def test_gradients_equal_those_of_conv1d():
    torch.manual_seed(0)
    sequence = torch.randn(2, 12, 6, requires_grad=True)
    weight = torch.randn(6, 1, 5, requires_grad=True)
    bias = torch.randn(6, requires_grad=True)
    upstream = torch.randn(2, 6, 12)
    fast = torch.autograd.grad((depthwise_conv1d(sequence.transpose(1, 2), weight, bias, 2, 2) * upstream).sum(),
                               (sequence, weight, bias))
    reference = torch.nn.functional.conv1d(sequence.transpose(1, 2), weight, bias, padding=2, groups=6)
    slow = torch.autograd.grad((reference * upstream).sum(), (sequence, weight, bias))
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("taps, left_pad, right_pad", [(7, 3, 3), (4, 2, 1), (5, 4, 1), (1, 0, 0), (15, 7, 7)])
def test_gradients_equal_those_of_conv1d_on_padded_input_in_float64(taps, left_pad, right_pad):
    """The custom backward (oneDNN's input gradient, the weight gradient as a convolution) for every padding the
    encoders use, including the asymmetric ones whose extra output frames are sliced off."""
    torch.manual_seed(taps)
    sequence = torch.randn(3, 17, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 1, taps, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    y = depthwise_conv1d(sequence.transpose(1, 2), weight, bias, left_pad, right_pad)
    upstream = torch.randn(y.shape, dtype=torch.float64)
    fast = torch.autograd.grad(y, (sequence, weight, bias), upstream)
    padded = nn.functional.pad(sequence.transpose(1, 2), (left_pad, right_pad))
    reference = nn.functional.conv1d(padded, weight, bias, groups=6)
    assert reference.shape == y.shape
    slow = torch.autograd.grad(reference, (sequence, weight, bias), upstream)
    names, node = [], y.grad_fn  # the custom backward sits under the squeeze (and the slice)
    while node is not None and len(names) < 4:
        names.append(type(node).__name__)
        node = node.next_functions[0][0] if node.next_functions else None
    assert "_DepthwiseTimeConvBackward" in names
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_1d_weight_gradient_is_the_sum_over_frames_in_float32():
    """The float32 path of a training step against a per-tap loop in float64, at a Zipformer layer's shape."""
    torch.manual_seed(2)
    x, grad = torch.randn(2, 8, 75), torch.randn(2, 8, 75)
    padded = nn.functional.pad(x.double(), (15, 15))
    expected = torch.stack([(padded[..., i : i + 75] * grad.double()).sum(dim=(0, 2)) for i in range(31)], dim=-1)
    fast = depthwise_conv1d_weight_grad(x.transpose(1, 2).contiguous().transpose(1, 2), grad, 15)
    assert fast.dtype == torch.float32 and fast.shape == (8, 1, 31)
    torch.testing.assert_close(fast.double(), expected.unsqueeze(1), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_same_padded_module_gives_the_module_output():
    torch.manual_seed(1)
    conv = torch.nn.Conv1d(6, 6, 7, padding=3, groups=6)
    x = torch.randn(3, 20, 6).transpose(1, 2)
    torch.testing.assert_close(same_depthwise_conv1d(conv, x), conv(x), atol=1e-5, rtol=0)


def test_rejects_more_padding_on_the_right():
    with pytest.raises(ValueError, match="right_pad <= left_pad"):
        depthwise_conv1d(torch.zeros(1, 2, 8), torch.zeros(2, 1, 4), None, 1, 2)


@pytest.mark.parametrize("kernel, with_bias", [((7, 7), True), ((3, 5), False), ((1, 3), True)])
def test_2d_same_convolution_gives_conv2d_output_and_gradients(kernel, with_bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, kernel, padding=(kernel[0] // 2, kernel[1] // 2), groups=6, bias=with_bias).double()
    params = [conv.weight] + ([conv.bias] if with_bias else [])
    x = torch.randn(3, 6, 23, 11, dtype=torch.float64)
    upstream = torch.randn(3, 6, 23, 11, dtype=torch.float64)

    def output_and_grads(function):
        leaf = x.clone().requires_grad_(True)
        y = function(leaf)
        return y, torch.autograd.grad(y, [leaf, *params], upstream)

    y, grads = output_and_grads(conv)
    y_fast, grads_fast = output_and_grads(lambda t: same_depthwise_conv2d(conv, t))
    assert type(y_fast.grad_fn).__name__ == "_SameDepthwiseConv2dBackward"  # the matrix-product backward ran
    torch.testing.assert_close(y_fast, y, rtol=0, atol=0)
    for grad, grad_fast in zip(grads, grads_fast):
        torch.testing.assert_close(grad_fast, grad, rtol=1e-12, atol=1e-12)


def test_2d_weight_gradient_is_the_sum_over_positions_in_float32():
    """The float32 path that a training step takes, against a per-tap loop in float64."""
    torch.manual_seed(1)
    x, grad = torch.randn(2, 4, 30, 19), torch.randn(2, 4, 30, 19)
    padded = nn.functional.pad(x.double(), (3, 3, 3, 3))
    expected = torch.empty(4, 1, 7, 7, dtype=torch.float64)
    for i in range(7):
        for j in range(7):
            expected[:, 0, i, j] = (padded[:, :, i : i + 30, j : j + 19] * grad.double()).sum(dim=(0, 2, 3))
    fast = depthwise_conv2d_weight_grad(x, grad, (7, 7))
    assert fast.dtype == torch.float32 and fast.shape == (4, 1, 7, 7)
    torch.testing.assert_close(fast.double(), expected, rtol=1e-5, atol=1e-5)
