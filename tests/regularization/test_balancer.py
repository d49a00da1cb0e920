import math

import pytest
import torch

from hybrid_encoders.regularization import balancer as balancer_module
from hybrid_encoders.regularization.balancer import (
    Balancer,
    channel_mean_and_variance,
    limit_param_value,
    penalize_abs_values_gt,
    scale_grad,
)


def _slow_balanced_grad(x, upstream, min_positive, max_positive, min_abs, max_abs, grad_scale):
    """Per-channel loops in float64: the spec's loss, its gradient normalised per channel, then g + |g| * scale * d."""
    x = x.double()
    frames, channels = x.shape

    def to_mean(p):
        a = 2 * p - 1
        return 0.8139535143 * 0.5 * (math.log(1 + a + 1e-10) - math.log(1 - a + 1e-10))

    min_mean, max_mean = to_mean(min_positive), to_mean(max_positive)
    min_rms, max_rms = 1.25331413732 * min_abs, 1.25331413732 * max_abs
    direction = torch.zeros_like(x)
    for c in range(channels):
        column = x[:, c].clone().requires_grad_(True)
        mean = column.mean()
        rms = (column**2).mean().sqrt()
        std = ((column**2).mean() - mean**2).sqrt()
        ratio = mean / std
        loss = (ratio - ratio.clamp(min_mean, max_mean)).abs() + torch.log(rms.clamp(min_rms, max_rms) / rms).abs()
        (grad,) = torch.autograd.grad(loss, column)
        direction[:, c] = grad / max(float((grad**2).mean().sqrt()), 1e-20)  # 0 when satisfied
    return upstream.double() + upstream.double().abs() * grad_scale * direction


def test_balancer_is_identity_forward_and_edits_gradient_as_specified():
    torch.manual_seed(0)
    x = (torch.randn(50, 3) + torch.tensor([3.0, 0.0, 0.0])) * torch.tensor([1.0, 20.0, 1.0])
    x.requires_grad_(True)
    upstream = torch.randn(50, 3)
    balancer = Balancer(3, channel_dim=-1, min_positive=0.1, max_positive=0.9, min_abs=0.2, max_abs=5.0, prob=1.0)
    y = balancer.train()(x)
    assert torch.equal(y, x)
    y.backward(upstream)
    expected = _slow_balanced_grad(x.detach(), upstream, 0.1, 0.9, 0.2, 5.0, 0.04)
    torch.testing.assert_close(x.grad.double(), expected, rtol=1e-4, atol=1e-6)
    # channel 2 satisfies every constraint: its gradient is untouched
    torch.testing.assert_close(x.grad[:, 2], upstream[:, 2])


@pytest.mark.parametrize("slice_elements", [1 << 22, 60])  # one slice; slices of one channel (60 elements each)
def test_balancer_on_a_channel_axis_inside_4d_activations_matches_the_per_channel_reference(
    slice_elements, monkeypatch
):
    """The closed-form gradient (two reductions for the statistics) against the loop: a channel in range, one too loud, one too
    quiet, one almost always positive (a mean of 40 standard deviations), on axis 1 of (B, C, T, F) as the embed."""
    monkeypatch.setattr(balancer_module, "SLICE_ELEMENTS", slice_elements)
    torch.manual_seed(1)
    scale = torch.tensor([1.0, 30.0, 0.01, 0.1]).view(1, 4, 1, 1)
    shift = torch.tensor([0.0, 0.0, 0.0, 4.0]).view(1, 4, 1, 1)
    x = (torch.randn(2, 4, 6, 5) * scale + shift).requires_grad_(True)
    upstream = torch.randn(2, 4, 6, 5)
    balancer = Balancer(4, channel_dim=1, min_positive=0.1, max_positive=0.9, min_abs=0.2, max_abs=5.0, prob=1.0)
    balancer.train()(x).backward(upstream)

    def channels_last(t):
        return t.detach().movedim(1, -1).reshape(-1, 4)

    expected = _slow_balanced_grad(channels_last(x), channels_last(upstream), 0.1, 0.9, 0.2, 5.0, 0.04)
    torch.testing.assert_close(channels_last(x.grad).double(), expected, rtol=1e-4, atol=1e-6)
    assert torch.equal(x.grad[:, 0], upstream[:, 0])
    assert all((x.grad[:, c] - upstream[:, c]).abs().max() > 1e-3 for c in (1, 2, 3))


@pytest.mark.parametrize("shape, channel_dim", [((2, 5, 300, 7), 1), ((3, 400, 5), -1)])
def test_channel_mean_and_variance_against_float64_var_mean(shape, channel_dim):
    """E[x^2] - mean^2 in float32 against float64 ``var_mean``, at mean/std ratios 0 to 10 (Balancer ranges end near 2)."""
    torch.manual_seed(2)
    stats_shape = [1] * len(shape)
    stats_shape[channel_dim] = 5
    std = torch.tensor([1.0, 30.0, 0.01, 0.1, 2.0]).view(stats_shape)
    ratio = torch.tensor([0.0, 1.0, -3.0, 10.0, 0.5]).view(stats_shape)
    x = torch.randn(shape) * std + ratio * std
    mean, var = channel_mean_and_variance(x, channel_dim)
    dims = [d for d in range(len(shape)) if d != channel_dim % len(shape)]
    expected_var, expected_mean = torch.var_mean(x.double(), dim=dims, correction=0, keepdim=True)
    assert mean.shape == var.shape == tuple(stats_shape)
    torch.testing.assert_close(mean.double(), expected_mean, rtol=1e-5, atol=1e-6 * float(std.min()))
    torch.testing.assert_close(var.double(), expected_var, rtol=1e-4, atol=0.0)


def test_balancer_does_nothing_in_eval_or_without_grad():
    balancer = Balancer(3, channel_dim=-1, prob=1.0)
    x = torch.randn(4, 3, requires_grad=True)
    assert balancer.eval()(x) is x
    plain = torch.randn(4, 3)
    assert balancer.train()(plain) is plain


def test_scale_grad_limit_param_value_and_penalty():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    scale_grad(x, 0.2).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([0.2, 0.2]))

    p = torch.tensor([-1.0, 0.5, 3.0], requires_grad=True)
    limit_param_value(p, 0.0, 1.0, prob=1.0).backward(torch.tensor([1.0, 1.0, -1.0]))
    torch.testing.assert_close(p.grad, torch.tensor([-1.0, 1.0, 1.0]))

    s = torch.tensor([30.0, -30.0, 3.0], requires_grad=True)
    penalize_abs_values_gt(s, limit=25.0, penalty=1e-4).sum().backward()
    torch.testing.assert_close(s.grad, torch.tensor([1 + 1e-4, 1 - 1e-4, 1.0]))
    with pytest.raises(ValueError):
        limit_param_value(p, 1.0, 0.0, prob=1.0)


def test_penalty_gradient_equals_the_auxiliary_loss_and_keeps_one_byte_an_element():
    torch.manual_seed(0)
    scores = (40 * torch.randn(2, 3, 50, 50)).requires_grad_()
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append((t.dtype, t.numel())) or t, lambda t: t):
        out = penalize_abs_values_gt(scores, limit=25.0, penalty=1e-4)
    assert kept == [(torch.int8, scores.numel())]
    grad = torch.randn_like(scores)
    (actual,) = torch.autograd.grad(out, scores, grad)
    # the gradient of <out, grad> + 1e-4 * sum(relu(|s| - 25))
    reference = scores.detach().requires_grad_()
    loss = (reference * grad).sum() + 1e-4 * torch.relu(reference.abs() - 25.0).sum()
    (expected,) = torch.autograd.grad(loss, reference)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-7)
