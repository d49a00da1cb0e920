import torch
from torch import nn

from hybrid_encoders.layers.conv_module import ConvolutionModule, DepthwiseConvNorm


def _mask(lengths, frames):
    return (torch.arange(frames)[None, :] < torch.tensor(lengths)[:, None]).unsqueeze(1)


def _randomise_norm(module):
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm1d):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    return module


def test_conv_module_channels_and_padding_invariance():
    torch.manual_seed(0)
    built = []

    def build(channels):
        built.append(channels)
        return DepthwiseConvNorm(channels, 7)

    paper = _randomise_norm(ConvolutionModule(8, build)).eval()
    glu = ConvolutionModule(8, build, glu=True)
    assert built == [16, 8]
    assert paper.pointwise_conv2.in_features == 16 and glu.pointwise_conv2.in_features == 8
    x = torch.randn(2, 12, 8)
    padded = x.clone()
    padded[1, 5:] = 1e3
    with torch.no_grad():
        alone = paper(x[1:, :5], _mask([5], 5))
        batched = paper(padded, _mask([12, 5], 12))
    torch.testing.assert_close(batched[1, :5], alone[0], atol=1e-5, rtol=0)


def test_conv_module_is_the_paper_formula():
    torch.manual_seed(0)
    module = _randomise_norm(ConvolutionModule(4, lambda c: DepthwiseConvNorm(c, 3))).eval()
    x = torch.randn(1, 6, 4)
    with torch.no_grad():
        h = nn.functional.silu(x @ module.pointwise_conv1.weight.T + module.pointwise_conv1.bias)
        h = h.transpose(1, 2)
        h = nn.functional.conv1d(h, module.depthwise.conv.weight, module.depthwise.conv.bias, padding=1, groups=8)
        bn = module.depthwise.norm
        h = (h - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps)
        h = nn.functional.silu(h * bn.weight[:, None] + bn.bias[:, None]).transpose(1, 2)
        reference = h @ module.pointwise_conv2.weight.T + module.pointwise_conv2.bias
        torch.testing.assert_close(module(x, _mask([6], 6)), reference, atol=1e-5, rtol=0)
