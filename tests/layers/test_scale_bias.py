import torch

from hybrid_encoders.layers.scale_bias import ScaleBias


def test_scale_bias_starts_as_identity_and_is_per_channel():
    layer = ScaleBias(3)
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(layer(x), x)
    with torch.no_grad():
        layer.scale.copy_(torch.tensor([1.0, 2.0, 3.0]))
        layer.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    torch.testing.assert_close(layer(x), x * torch.tensor([1.0, 2.0, 3.0]) + torch.tensor([0.0, 1.0, -1.0]))
