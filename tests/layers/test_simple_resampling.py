import torch

from hybrid_encoders.layers.simple_resampling import SimpleDownsample, SimpleUpsample


def test_downsample_matches_weighted_sum_with_last_frame_padding():
    torch.manual_seed(0)
    down = SimpleDownsample(3)
    with torch.no_grad():
        down.bias.copy_(torch.tensor([0.2, -0.4, 1.0]))
    x = torch.randn(2, 7, 4)
    weights = torch.softmax(down.bias.detach(), 0)
    padded = torch.cat([x, x[:, -1:], x[:, -1:]], dim=1)
    expected = torch.stack(
        [sum(weights[r] * padded[:, 3 * t + r] for r in range(3)) for t in range(3)], dim=1
    )
    torch.testing.assert_close(down(x), expected)


def test_upsample_repeats_frames():
    x = torch.arange(6.0).reshape(1, 3, 2)
    y = SimpleUpsample(2)(x)
    assert y.shape == (1, 6, 2)
    assert torch.equal(y[0, ::2], x[0]) and torch.equal(y[0, 1::2], x[0])
