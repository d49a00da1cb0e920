"""Memory-lean autograd functions: the gradients of the plain formulation, less saved for the backward pass."""

import pytest
import torch
import torch.nn.functional as F

from hybrid_encoders.layers import lean_autograd
from hybrid_encoders.layers.feed_forward import FeedForward
from hybrid_encoders.layers.lean_autograd import (
    SIGMOID,
    SILU,
    TANH,
    Dropout,
    activation_conv,
    activation_dropout_linear,
    dropout,
    dropout_mask,
    gate,
    pointwise,
    softmax,
)
from hybrid_encoders.layers.swoosh import SWOOSH_ACTIVATIONS, SwooshLinear

ACTIVATIONS = {
    "silu": (SILU, F.silu),
    "sigmoid": (SIGMOID, torch.sigmoid),
    "tanh": (TANH, torch.tanh),
    # the Swoosh formulas written out independently of swoosh.py
    "swoosh_l": (SWOOSH_ACTIVATIONS["swoosh_l"], lambda x: F.softplus(x - 4.0) - 0.08 * x - 0.035),
    "swoosh_r": (SWOOSH_ACTIVATIONS["swoosh_r"], lambda x: F.softplus(x - 1.0) - 0.08 * x - 0.313261687),
}


def saved_bytes(function, *args, exclude=()) -> int:
    """Bytes of the distinct storages autograd saves for the backward pass of ``function(*args)``, without ``args``
    and ``exclude`` (inputs and parameters are kept alive by their owners anyway)."""
    leaves = {tensor.untyped_storage().data_ptr() for tensor in (*args, *exclude)}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in leaves:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function(*args)
    return sum(storages.values())


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("mask", ["none", "shared", "full"])
def test_activation_dropout_linear_gradcheck_against_plain_formula(name, mask):
    activation, plain = ACTIVATIONS[name]
    generator = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(2, 5, 6, generator=generator, dtype=torch.float64)).requires_grad_()
    weight = torch.randn(4, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=generator, dtype=torch.float64, requires_grad=True)
    shape = {"none": None, "shared": (2, 1, 6), "full": (2, 5, 6)}[mask]
    keep = None if shape is None else torch.rand(shape, generator=generator) > 0.3
    scale = 1.0 if keep is None else 1 / 0.7

    def lean(x, weight, bias):
        return activation_dropout_linear(x, activation, weight, bias, keep, scale)

    def reference(x, weight, bias):
        hidden = plain(x) if keep is None else plain(x) * keep.double() * scale
        return F.linear(hidden, weight, bias)

    torch.testing.assert_close(lean(x, weight, bias), reference(x, weight, bias), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lean, (x, weight, bias))
    grad = torch.randn(2, 5, 4, generator=generator, dtype=torch.float64)
    expected = torch.autograd.grad(reference(x, weight, bias), (x, weight, bias), grad)
    actual = torch.autograd.grad(lean(x, weight, bias), (x, weight, bias), grad)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_activation_dropout_linear_without_bias_and_frozen_weight():
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: activation_dropout_linear(x, SILU, weight, None), (x,))


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_gate_gradcheck_against_plain_formula(name):
    activation, plain = ACTIVATIONS[name]
    projected = torch.randn(2, 7, 8, dtype=torch.float64, requires_grad=True)

    def lean(projected):
        values, gate_input = projected.chunk(2, dim=-1)
        return gate(values, gate_input, activation)

    values, gate_input = projected.chunk(2, dim=-1)
    torch.testing.assert_close(lean(projected), values * plain(gate_input), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lean, (projected,))


@pytest.mark.parametrize("name", ["swoosh_l", "swoosh_r", "silu"])
def test_pointwise_gradcheck_against_plain_formula(name):
    activation, plain = ACTIVATIONS[name]
    x = (4 * torch.randn(3, 9, dtype=torch.float64)).requires_grad_()
    torch.testing.assert_close(pointwise(x, activation), plain(x), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: pointwise(x, activation), (x,))


def test_dropout_keeps_expectation_and_masks_its_gradient():
    torch.manual_seed(0)
    x = torch.ones(4000, 8, requires_grad=True)
    out = dropout(x, 0.25, training=True)
    kept = out != 0
    assert 0.7 < kept.float().mean() < 0.8
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.75))
    out.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)
    assert dropout(x, 0.25, training=False) is x
    with pytest.raises(ValueError, match="p must lie in"):
        Dropout(1.0)


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.9])
def test_dropout_mask_drops_with_probability_p_in_every_lane_of_its_random_words(p):
    torch.manual_seed(0)
    count = 400_000
    keep = dropout_mask(torch.empty(count), p)
    assert keep.dtype == torch.bool and keep.shape == (count,)
    # four mask elements per 64-bit draw: each lane (the last one holds the sign bit) must drop at rate p
    dropped = (~keep).view(-1, 4).double().mean(dim=0)
    tolerance = 5 * (p * (1 - p) / (count / 4)) ** 0.5
    assert torch.all((dropped - p).abs() < tolerance), dropped
    assert not dropout_mask(torch.empty(count), 0.0).logical_not().any()


def test_dropout_mask_shares_its_draw_along_shared_dim_and_follows_the_seed():
    x = torch.empty(3, 50, 7)
    torch.manual_seed(4)
    shared = dropout_mask(x, 0.5, shared_dim=1)
    assert shared.shape == (3, 1, 7)
    torch.manual_seed(4)
    assert torch.equal(dropout_mask(x, 0.5, shared_dim=1), shared)
    assert dropout_mask(x, 0.5).shape == (3, 50, 7)


def test_dropout_saves_a_bool_mask_only():
    x = torch.randn(16, 64, requires_grad=True)
    assert saved_bytes(lambda x: dropout(x, 0.1, True), x) == 16 * 64  # one byte per element
    assert saved_bytes(lambda x: F.dropout(x, 0.1, True), x) == 4 * 16 * 64  # PyTorch's CPU dropout: float mask


def test_lean_functions_save_less_than_the_plain_formulation():
    x = torch.randn(4, 50, 32, requires_grad=True)
    weight = torch.randn(8, 32, requires_grad=True)
    keep = torch.rand(4, 50, 32) > 0.1
    hidden_bytes = 4 * x.numel()

    def plain(x):
        return F.linear(F.dropout(F.silu(x), 0.1, True), weight)

    # the plain formulation: the dropout's float mask and the linear's input at least
    assert saved_bytes(plain, x, exclude=[weight]) >= 2 * hidden_bytes

    def lean(x):
        return activation_dropout_linear(x, SILU, weight, None, keep, 1 / 0.9)

    assert saved_bytes(lean, x, exclude=[weight]) == keep.numel()  # x is a leaf here: only the bool mask is new

    projection = torch.randn(4, 50, 64, requires_grad=True)

    def plain_gate(p):
        values, g = (p * 1.0).chunk(2, dim=-1)
        return values * torch.sigmoid(g)

    def lean_gate(p):
        values, g = (p * 1.0).chunk(2, dim=-1)
        return gate(values, g, SIGMOID)

    assert saved_bytes(lean_gate, projection) == 4 * projection.numel()  # the projection's storage only
    sigmoid_bytes = 4 * projection.numel() // 2
    assert saved_bytes(plain_gate, projection) == 4 * projection.numel() + sigmoid_bytes


def test_modules_use_the_lean_path_in_training():
    torch.manual_seed(0)
    ff = FeedForward(16, 64, dropout_rate=0.1).train()
    x = torch.randn(2, 30, 16, requires_grad=True)
    hidden = 2 * 30 * 64
    # w_1's input (a leaf here), the pre-activation and a bool mask; the plain path adds a float mask and the
    # dropped activation
    assert saved_bytes(ff, x, exclude=list(ff.parameters())) == 4 * hidden + hidden
    swoosh = SwooshLinear(64, 16, "swoosh_l", dropout=0.1, dropout_shared_dim=1).train()
    h = torch.randn(2, 30, 64, requires_grad=True)
    assert saved_bytes(swoosh, h, exclude=list(swoosh.parameters())) == 2 * 64  # the (B, 1, C) bool mask; h is a leaf


def test_feed_forward_training_matches_plain_formulation_with_the_same_mask():
    torch.manual_seed(0)
    ff = FeedForward(16, 64, dropout_rate=0.2).train()
    x = torch.randn(2, 30, 16, requires_grad=True)
    torch.manual_seed(1)
    out = ff(x)
    torch.manual_seed(1)
    keep = dropout_mask(torch.empty(2, 30, 64), 0.2)  # the draw FeedForward makes
    expected = ff.w_2(F.silu(ff.w_1(x)) * keep / 0.8)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.square().sum(), [x, *ff.parameters()])
    expected_grads = torch.autograd.grad(expected.square().sum(), [x, *ff.parameters()])
    for actual, wanted in zip(grads, expected_grads):
        torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-6)
    ff.eval()
    torch.testing.assert_close(ff(x), ff.w_2(F.silu(ff.w_1(x))))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_activation_dropout_linear_under_autocast_matches_autocast_of_plain_formula(dtype):
    torch.manual_seed(0)
    x = torch.randn(2, 20, 32, requires_grad=True)
    weight = torch.randn(16, 32, requires_grad=True)
    bias = torch.randn(16, requires_grad=True)
    keep = torch.rand(2, 1, 32) > 0.2
    with torch.autocast("cpu", dtype=dtype):
        hidden = torch.nn.functional.linear(x, torch.eye(32)) * 2  # an autocast-dtype input, as in a model
        out = activation_dropout_linear(hidden, SWOOSH_ACTIVATIONS["swoosh_l"], weight, bias, keep, 1.25)
        reference = F.linear((F.softplus(hidden - 4.0) - 0.08 * hidden - 0.035) * keep * 1.25, weight, bias)
    assert out.dtype == reference.dtype == dtype
    torch.testing.assert_close(out, reference, rtol=2e-2, atol=2e-2)
    grads = torch.autograd.grad(out.float().square().sum(), (x, weight, bias), retain_graph=True)
    expected = torch.autograd.grad(reference.float().square().sum(), (x, weight, bias))
    for actual, wanted in zip(grads, expected):
        assert actual.dtype == wanted.dtype == torch.float32
        assert torch.isfinite(actual).all()
        torch.testing.assert_close(actual, wanted, rtol=5e-2, atol=5e-2 * float(wanted.abs().max()))


@pytest.mark.parametrize(
    "conv",
    [
        torch.nn.Conv2d(3, 4, kernel_size=1),
        torch.nn.Conv2d(4, 4, kernel_size=(3, 5), padding=(1, 2), groups=4),
        torch.nn.Conv2d(3, 5, kernel_size=3, stride=(1, 2), bias=False),
        torch.nn.Conv1d(4, 6, kernel_size=3, stride=2, padding=1),
        torch.nn.Conv1d(4, 6, kernel_size=1),
    ],
)
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_conv_gradcheck_against_plain_formula(conv, name):
    activation, plain = ACTIVATIONS[name]
    conv = conv.double()
    x = (3 * torch.randn(2, conv.in_channels, *([7, 9][: conv.weight.dim() - 2]), dtype=torch.float64)).requires_grad_()
    parameters = list(conv.parameters())

    def lean(x, *_parameters):
        return activation_conv(x, activation, conv)

    torch.testing.assert_close(lean(x), conv(plain(x)), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lean, (x, *parameters))
    assert saved_bytes(lambda x: activation_conv(x, activation, conv), x, exclude=parameters) == 0  # x only


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_pointwise_activation_conv_backward_in_channel_slices_passes_gradcheck(name, monkeypatch):
    """A 1 x 1 convolution's backward pass works through slices of input channels: here of one channel each."""
    monkeypatch.setattr(lean_autograd, "SLICE_ELEMENTS", 2 * 7 * 9)
    activation, plain = ACTIVATIONS[name]
    conv = torch.nn.Conv2d(5, 3, kernel_size=1).double()
    x = (3 * torch.randn(2, 5, 7, 9, dtype=torch.float64)).requires_grad_()

    def lean(x, *_parameters):
        return activation_conv(x, activation, conv)

    assert torch.autograd.gradcheck(lean, (x, *conv.parameters()))
    out = lean(x)
    grads = torch.autograd.grad(out.sum(), (x, conv.weight, conv.bias))
    expected = torch.autograd.grad(conv(plain(x)).sum(), (x, conv.weight, conv.bias))
    for grad, want in zip(grads, expected):
        torch.testing.assert_close(grad, want, rtol=1e-12, atol=1e-12)


def test_pointwise_conv_gives_the_convolution_and_its_gradients(monkeypatch):
    monkeypatch.setattr(lean_autograd, "SLICE_ELEMENTS", 2 * 7 * 9 * 2)  # slices of two input channels
    conv = torch.nn.Conv2d(5, 3, kernel_size=1).double()
    x = torch.randn(2, 5, 7, 9, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    out = lean_autograd.pointwise_conv(x, conv)
    torch.testing.assert_close(out, conv(x), rtol=0, atol=0)
    grads = torch.autograd.grad(out, (x, conv.weight, conv.bias), upstream)
    expected = torch.autograd.grad(conv(x), (x, conv.weight, conv.bias), upstream)
    for grad, want in zip(grads, expected):
        torch.testing.assert_close(grad, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="1 x 1 convolution"):
        lean_autograd.pointwise_conv(x, torch.nn.Conv2d(5, 3, kernel_size=3, padding=1).double())


def test_activation_conv_rejects_string_padding():
    with pytest.raises(ValueError, match="numeric zero padding"):
        activation_conv(torch.randn(1, 2, 5), SILU, torch.nn.Conv1d(2, 2, 3, padding="same"))


def test_softmax_gradient_is_the_plain_softmax_gradient():
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: softmax(x, dim=-1), (x,))
    y = torch.randn(2, 3, 5, 7, requires_grad=True)
    g = torch.randn(2, 3, 5, 7)
    (ours,) = torch.autograd.grad(softmax(y, dim=-1), y, g)
    (plain,) = torch.autograd.grad(y.softmax(dim=-1), y, g)
    assert torch.equal(ours, plain)  # the same kernel on the same saved output


def test_softmax_under_autocast_returns_and_saves_its_output_in_autocast_dtype():
    # CPU autocast keeps a float32 softmax in float32, which is what CUDA autocast does to every softmax: the case
    # in which the plain formulation saves (B, H, T, T) float32 weights and the matmuls cast them once more.
    torch.manual_seed(0)
    scores = torch.randn(2, 4, 30, 30, requires_grad=True)
    values = torch.randn(2, 4, 30, 8, requires_grad=True)
    elements = scores.numel()

    def plain(scores, values):
        return torch.matmul(scores.softmax(dim=-1), values)

    def lean(scores, values):
        return torch.matmul(softmax(scores, dim=-1), values)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        weights = softmax(scores, dim=-1)
        assert weights.dtype == torch.bfloat16
        assert saved_bytes(plain, scores, values) >= (4 + 2) * elements
        assert saved_bytes(lean, scores, values, exclude=[]) - 2 * values.numel() == 2 * elements
        out, reference = lean(scores, values), plain(scores, values)
    torch.testing.assert_close(out, reference, rtol=0, atol=0)  # the products see the same bf16 weights
    grads = torch.autograd.grad(out.float().square().sum(), (scores, values), retain_graph=True)
    expected = torch.autograd.grad(reference.float().square().sum(), (scores, values))
    for actual, wanted in zip(grads, expected):
        assert actual.dtype == wanted.dtype == torch.float32
        torch.testing.assert_close(actual, wanted, rtol=2e-2, atol=2e-2 * float(wanted.abs().max()))


def test_silu_chain_is_the_fused_kernel_and_equals_the_derivative():
    x = 4 * torch.randn(3, 50, dtype=torch.float64)
    grad = torch.randn_like(x)
    leaf = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(F.silu(leaf), leaf, grad)  # autograd's grad * silu'(x)
    torch.testing.assert_close(SILU.chain(grad, x), expected, rtol=1e-12, atol=1e-12)
    # different dtypes (autocast): the unfused formula in the gradient's dtype
    mixed = SILU.chain(grad.to(torch.bfloat16), x)
    assert mixed.dtype == torch.bfloat16
    torch.testing.assert_close(mixed, expected.to(torch.bfloat16))
