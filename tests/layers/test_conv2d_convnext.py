import torch

from hybrid_encoders.layers.subsampling import build_subsampling
from hybrid_encoders.layers.swoosh import swoosh_l


def test_lengths_shapes_and_minimum_input():
    embed = build_subsampling("conv2d_convnext", 80, 24).eval()
    assert embed.min_input_length == 9
    lengths = torch.tensor([30, 29, 9])
    with torch.no_grad():
        out, out_lengths = embed(torch.randn(3, 30, 80), lengths)
    assert out_lengths.tolist() == ((lengths - 7) // 2).tolist() == [11, 11, 1]
    assert out.shape == (3, 11, 24)


def test_convnext_inference_path_matches_the_plain_formula():
    torch.manual_seed(0)
    embed = build_subsampling("conv2d_convnext", 80, 24)
    convnext = embed.convnext.eval()
    with torch.no_grad():
        convnext.pointwise_conv2.weight.mul_(50.0)  # make the residual branch matter
        x = torch.randn(2, 128, 12, 19)
        expected = x + convnext.pointwise_conv2(swoosh_l(convnext.pointwise_conv1(convnext.depthwise_conv(x))))
        torch.testing.assert_close(convnext(x), expected, rtol=1e-5, atol=1e-5)
        convnext.train()
        convnext.layerdrop_rate.points = ((0.0, 0.0),)
        torch.testing.assert_close(convnext(x), expected, rtol=1e-5, atol=1e-5)
