import torch

from hybrid_encoders.layers.swoosh import swoosh_l, swoosh_r
from hybrid_encoders.layers.zipformer_conv_module import ZipformerConvModule
from hybrid_encoders.layers.zipformer_feed_forward import ZipformerFeedForward


def test_feed_forward_is_linear_swoosh_l_linear():
    torch.manual_seed(0)
    ff = ZipformerFeedForward(6, 10).double().eval()
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    expected = torch.nn.functional.linear(swoosh_l(ff.in_proj(x)), ff.out_proj.weight, ff.out_proj.bias)
    torch.testing.assert_close(ff(x), expected)


def test_conv_module_matches_reference_and_zeroes_padding_before_the_convolution():
    torch.manual_seed(0)
    conv = ZipformerConvModule(4, kernel_size=3).double()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    mask = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    projected = conv.in_proj(x)
    gated = projected[..., :4] * torch.sigmoid(projected[..., 4:])
    gated = gated * (~mask).unsqueeze(-1)
    w, b = conv.depthwise_conv.weight, conv.depthwise_conv.bias
    padded = torch.nn.functional.pad(gated, (0, 0, 1, 1))
    convolved = torch.stack([sum(padded[:, t + k] * w[:, 0, k] for k in range(3)) + b for t in range(6)], dim=1)
    expected = torch.nn.functional.linear(swoosh_r(convolved), conv.out_proj.weight, conv.out_proj.bias)
    torch.testing.assert_close(conv.eval()(x, mask), expected)
    torch.testing.assert_close(conv.train()(x, mask), expected)  # training-only modules are forward-identity
