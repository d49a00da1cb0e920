import pytest
import torch

from hybrid_encoders.layers.depthwise_conv import depthwise_conv1d, same_depthwise_conv1d


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


@torch.no_grad()
def test_same_padded_module_gives_the_module_output():
    torch.manual_seed(1)
    conv = torch.nn.Conv1d(6, 6, 7, padding=3, groups=6)
    x = torch.randn(3, 20, 6).transpose(1, 2)
    torch.testing.assert_close(same_depthwise_conv1d(conv, x), conv(x), atol=1e-5, rtol=0)


def test_rejects_more_padding_on_the_right():
    with pytest.raises(ValueError, match="right_pad <= left_pad"):
        depthwise_conv1d(torch.zeros(1, 2, 8), torch.zeros(2, 1, 4), None, 1, 2)
