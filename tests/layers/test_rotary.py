import math

import pytest
import torch

from hybrid_encoders.layers.rotary import RotaryEmbedding


def _rotate_at(rope, vectors, positions):
    """Rotate each vector as if it stood at the given position of a longer sequence."""
    length = max(positions) + 1
    out = []
    for vector, position in zip(vectors, positions):
        sequence = torch.zeros(length, vector.numel(), dtype=vector.dtype)
        sequence[position] = vector
        out.append(rope(sequence)[position])
    return out


def test_identity_at_position_zero():
    rope = RotaryEmbedding(8)
    x = torch.randn(3, 5, 12)
    assert torch.equal(rope(x)[:, 0], x[:, 0])


def test_channels_beyond_rope_dim_untouched():
    rope = RotaryEmbedding(8)
    x = torch.randn(2, 7, 12)
    y = rope(x)
    assert torch.equal(y[..., 8:], x[..., 8:])
    assert not torch.allclose(y[:, 1:, :8], x[:, 1:, :8])


def test_interleaved_pairs_on_one_hot_input():
    rope = RotaryEmbedding(4, theta=10000.0)
    x = torch.zeros(3, 4, dtype=torch.float64)
    x[:, 0] = 1.0  # the even channel of pair 0
    x[:, 2] = 1.0  # the even channel of pair 1, frequency 10000^(-2/4) = 0.01
    y = rope(x)
    for t in range(3):
        expected = [math.cos(t), math.sin(t), math.cos(0.01 * t), math.sin(0.01 * t)]
        assert y[t].tolist() == pytest.approx(expected, abs=1e-12)


def test_inner_product_depends_only_on_relative_position():
    torch.manual_seed(0)
    rope = RotaryEmbedding(16)
    q, k = torch.randn(2, 16, dtype=torch.float64)
    products = []
    for m, n in [(3, 1), (7, 5), (1002, 1000)]:
        q_m, k_n = _rotate_at(rope, [q, k], [m, n])
        products.append(float(q_m @ k_n))
    assert products[0] == pytest.approx(products[1], abs=1e-10)
    assert products[0] == pytest.approx(products[2], abs=1e-9)
    q_a, k_b = _rotate_at(rope, [q, k], [1, 3])  # offset -2 differs from offset +2
    assert abs(float(q_a @ k_b) - products[0]) > 1e-3


def test_norm_preserved_and_batch_dims_broadcast():
    rope = RotaryEmbedding(6)
    x = torch.randn(2, 3, 9, 10, dtype=torch.float64)
    y = rope(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rope(x[1, 2]), y[1, 2])


@pytest.mark.parametrize("rope_dim", [0, 3, -2])
def test_bad_rope_dim(rope_dim):
    with pytest.raises(ValueError, match="rope_dim"):
        RotaryEmbedding(rope_dim)


def test_too_few_channels():
    with pytest.raises(ValueError, match="rope_dim=8"):
        RotaryEmbedding(8)(torch.randn(2, 3, 6))


class _Float64Recorder(torch.overrides.TorchFunctionMode):
    """Names the torch functions that return a float64 tensor while active."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_function__(self, function, types, args=(), kwargs=None):
        result = function(*args, **(kwargs or {}))
        if isinstance(result, torch.Tensor) and result.dtype == torch.float64:
            self.names.append(getattr(function, "__name__", str(function)))
        return result


def test_export_path_has_no_float64_and_equals_eager(monkeypatch):
    """Exported graphs reduce the phase in int64 fixed point (sherpa-onnx's onnxruntime has no float64 Cos): the same
    rotation as the float64 eager path to float32 precision, up to 3,000 frames, with no float64 tensor on the way."""
    import hybrid_encoders.layers.rotary as rotary

    module = RotaryEmbedding(24)
    x = torch.randn(2, 3000, 32)
    with _Float64Recorder() as eager_ops:
        eager = module(x)
    assert eager_ops.names  # the recorder sees the eager path's float64 angles
    monkeypatch.setattr(rotary, "is_exporting", lambda: True)
    with _Float64Recorder() as export_ops:
        exported = module(x)
    assert export_ops.names == []
    torch.testing.assert_close(exported, eager, atol=5e-6, rtol=0)
