import math

import pytest
import torch

from hybrid_encoders.layers import swoosh
from hybrid_encoders.layers.swoosh import ScaledLinear, SwooshLinear, swoosh_l, swoosh_r


def _reference(x: float, offset: float, constant: float) -> float:
    return math.log1p(math.exp(x - offset)) - 0.08 * x - constant


@pytest.mark.parametrize("fn, offset, constant", [(swoosh_l, 4.0, 0.035), (swoosh_r, 1.0, 0.313261687)])
def test_swoosh_matches_formula_and_derivative(fn, offset, constant):
    values = [-30.0, -3.0, -0.5, 0.0, 0.7, 3.9, 12.0, 25.0]
    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    y = fn(x)
    expected = torch.tensor([_reference(v, offset, constant) for v in values], dtype=torch.float64)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-9)
    y.sum().backward()
    expected_grad = torch.tensor([1 / (1 + math.exp(offset - v)) - 0.08 for v in values], dtype=torch.float64)
    torch.testing.assert_close(x.grad, expected_grad, rtol=0, atol=1e-9)


@pytest.mark.parametrize("fn, offset, constant", [(swoosh_l, 4.0, 0.035), (swoosh_r, 1.0, 0.313261687)])
def test_export_form_matches_formula_without_overflow(fn, offset, constant, monkeypatch):
    """Exported graphs compute softplus as max(log(1 + exp(min(z, 80))), z); it must stay exact where exp(z)
    overflows and across the switch at z = 80, in float64 and in float32 (the exported dtype)."""
    monkeypatch.setattr(swoosh, "is_exporting", lambda: True)
    switch = 80.0 + offset
    values = [-800.0, -30.0, -0.5, 0.0, 3.9, 25.0, switch - 0.1, switch, switch + 0.1, 800.0]  # exp(796) overflows
    with torch.no_grad():
        y = fn(torch.tensor(values, dtype=torch.float64))
    expected = [v - offset - 0.08 * v - constant if v > 60 else _reference(v, offset, constant) for v in values]
    torch.testing.assert_close(y, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-9)
    sweep = torch.linspace(-120.0, 120.0, 24001)
    with torch.no_grad():
        y32 = fn(sweep)
    exact = torch.nn.functional.softplus(sweep.double() - offset) - 0.08 * sweep.double() - constant
    torch.testing.assert_close(y32.double(), exact, rtol=1e-6, atol=1e-6)


def test_swoosh_r_is_zero_at_zero():
    assert abs(float(swoosh_r(torch.zeros(1, dtype=torch.float64)))) < 1e-9


@pytest.mark.parametrize("activation, fn", [("swoosh_l", swoosh_l), ("swoosh_r", swoosh_r)])
def test_swoosh_linear_equals_linear_of_swoosh_in_both_modes(activation, fn):
    torch.manual_seed(0)
    layer = SwooshLinear(16, 8, activation, dropout=0.0, initial_scale=0.5)
    x = torch.randn(2, 5, 16) * 4
    expected = torch.nn.functional.linear(fn(x), layer.weight, layer.bias)
    torch.testing.assert_close(layer.eval()(x), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.train()(x), expected, rtol=1e-5, atol=1e-6)


def test_swoosh_linear_dropout_is_shared_over_time():
    torch.manual_seed(0)
    layer = SwooshLinear(64, 64, "swoosh_l", dropout=0.5, dropout_shared_dim=1).train()
    with torch.no_grad():
        layer.weight.copy_(torch.eye(64))
        layer.bias.zero_()
    x = torch.full((3, 7, 64), 6.0)
    out = layer(x)
    dropped = out == 0  # a dropped channel contributes nothing: W 0 + b with b = 0
    assert dropped.any() and not dropped.all()
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # same mask at every frame


def test_scaled_linear_initial_scale():
    torch.manual_seed(0)
    plain = torch.nn.Linear(32, 32)
    torch.manual_seed(0)
    scaled = ScaledLinear(32, 32, initial_scale=0.05)
    torch.testing.assert_close(scaled.weight, plain.weight * 0.05)
    assert scaled.bias.abs().max() <= 0.005
    with pytest.raises(ValueError, match="activation"):
        SwooshLinear(4, 4, "swish")


def test_inference_keeps_the_folded_bias_until_the_parameters_change():
    torch.manual_seed(0)
    layer = SwooshLinear(16, 8, "swoosh_r").eval()
    x = torch.randn(2, 16)

    def reference():
        return torch.nn.functional.linear(swoosh_r(x), layer.weight, layer.bias)

    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference())
        folded = layer._folded_bias_cache[1]
        layer(x)
        assert layer._folded_bias_cache[1] is folded  # reused while nothing changed
        layer.weight.mul_(3.0)  # an optimizer step or load_state_dict: the version counter moves
        torch.testing.assert_close(layer(x), reference())
        layer.load_state_dict({"weight": torch.randn(8, 16), "bias": torch.randn(8)})
        torch.testing.assert_close(layer(x), reference())
    layer.double()  # .to() replaces the parameters
    x = x.double()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference())
    assert layer(x).requires_grad  # with autograd the bias is folded in the graph, not taken from the cache
