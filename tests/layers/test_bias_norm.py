import torch

from hybrid_encoders.layers.bias_norm import BiasNorm


def test_bias_norm_matches_slow_reference():
    torch.manual_seed(0)
    norm = BiasNorm(6)
    with torch.no_grad():
        norm.bias.copy_(torch.randn(6))
        norm.log_scale.fill_(0.3)
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    expected = torch.empty_like(x)
    for b in range(2):
        for t in range(3):
            rms = sum((x[b, t, c].item() - norm.bias[c].item()) ** 2 for c in range(6)) / 6
            expected[b, t] = x[b, t] / rms**0.5 * torch.exp(torch.tensor(0.3, dtype=torch.float64))
    torch.testing.assert_close(norm.double()(x), expected)
    assert norm.log_scale.shape == ()  # 0-dim as in icefall's state dict


def test_bias_norm_log_scale_gradient_is_pushed_back_into_range():
    norm = BiasNorm(4).train()
    with torch.no_grad():
        norm.log_scale.fill_(2.0)  # above the 1.5 limit
    torch.manual_seed(1)
    flipped = 0
    for _ in range(20):  # limit_param_value acts with probability 0.6
        norm.zero_grad()
        (-norm(torch.randn(3, 4)).abs().sum()).backward()  # the loss wants log_scale larger: grad < 0
        flipped += int(norm.log_scale.grad > 0)
    assert 0 < flipped < 20
