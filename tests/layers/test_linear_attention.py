import pytest
import torch

from hybrid_encoders.layers.linear_attention import LinearAttention


def _rotation_matrix(position, rope_dim, d_k, theta=10000.0):
    """Block-diagonal rotation of RoFormer eq. 15 on the first rope_dim channels (identity on the rest)."""
    matrix = torch.eye(d_k, dtype=torch.float64)
    for i in range(rope_dim // 2):
        angle = torch.tensor(position * theta ** (-2 * i / rope_dim), dtype=torch.float64)
        c, s = torch.cos(angle), torch.sin(angle)
        matrix[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.stack([torch.stack([c, -s]), torch.stack([s, c])])
    return matrix


def _naive(attention, x, lengths, feature_map, rope_dim, denominator="rotated", floor=0.01):
    """O(T^2) left product, pair by pair, over the valid keys only, with the denominator floored at
    floor * |phi(q_t)| * sum_s |phi(k_s)| and clamped at 1e-6 (floor=0: the authors' formula)."""
    batch, length, dim = x.shape
    heads, d_k = attention.n_head, attention.d_k
    phi = torch.relu if feature_map == "relu" else (lambda z: torch.nn.functional.elu(z) + 1)
    params = {name: p.double() for name, p in attention.named_parameters()}

    def project(name, z):
        return z @ params[f"{name}.weight"].T + params[f"{name}.bias"]

    x = x.double()
    rotations = [_rotation_matrix(t, rope_dim, d_k) for t in range(length)]
    out = torch.zeros(batch, length, dim, dtype=torch.float64)
    for b in range(batch):
        q, k, v = project("linear_q", x[b]), project("linear_k", x[b]), project("linear_v", x[b])
        for h in range(heads):
            cols = slice(h * d_k, (h + 1) * d_k)
            for t in range(lengths[b]):
                q_t = phi(q[t, cols])
                numerator = torch.zeros(d_k, dtype=torch.float64)
                normaliser = torch.zeros((), dtype=torch.float64)
                score_bound = torch.zeros((), dtype=torch.float64)
                for s in range(lengths[b]):
                    k_s = phi(k[s, cols])
                    score = (rotations[t] @ q_t) @ (rotations[s] @ k_s)
                    numerator += score * v[s, cols]
                    normaliser += score if denominator == "rotated" else q_t @ k_s
                    score_bound += q_t.norm() * k_s.norm()
                out[b, t, cols] = numerator / torch.maximum(normaliser, floor * score_bound).clamp_min(1e-6)
    return project("linear_out", out)


@pytest.mark.parametrize(
    "feature_map, rope_dim, denominator",
    [
        ("relu", None, "rotated"),
        ("elu_plus_one", 4, "rotated"),
        ("relu", 8, "unrotated"),
        ("elu_plus_one", 0, "rotated"),
    ],
)
def test_right_product_equals_naive_left_product(feature_map, rope_dim, denominator):
    # d_k = 32: with a few channels per head, the authors' rotated denominator can turn negative and hit the clamp,
    # which makes any fp32 comparison meaningless (docs/hybridformer.md); at realistic d_k it stays well positive.
    torch.manual_seed(0)
    attention = LinearAttention(2, 64, feature_map=feature_map, rope_dim=rope_dim, denominator=denominator)
    lengths = [9, 6]
    x = torch.randn(2, 9, 64)
    mask = (torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]).unsqueeze(1)  # (B, 1, T), True = valid
    y = attention(x, x, x, None, mask)
    expected = _naive(attention, x, lengths, feature_map, 16 if rope_dim is None else rope_dim, denominator)
    assert y.shape == (2, 9, 64)
    for b, length in enumerate(lengths):
        torch.testing.assert_close(y[b, :length].double(), expected[b, :length], atol=1e-5, rtol=0)
    assert torch.isfinite(y).all()


def _unhealthy_case():
    """d_k = 8, fully rotated: frame 0..11 of seed 7 has one (frame, head) whose rotated denominator is negative."""
    torch.manual_seed(7)
    attention = LinearAttention(2, 16, rope_dim=8)
    x = torch.randn(1, 12, 16)
    with torch.no_grad():
        q = torch.relu(attention._heads(attention.linear_q(x))).double()
        k = torch.relu(attention._heads(attention.linear_k(x))).double()
        denominator = attention.rotary(q) @ attention.rotary(k).sum(-2, keepdim=True).transpose(-2, -1)
        score_bound = q.norm(dim=-1, keepdim=True) * k.norm(dim=-1, keepdim=True).sum(-2, keepdim=True)
    healthy = (denominator >= 0.01 * score_bound).squeeze(-1).all(dim=1)[0]  # (T,): every head healthy
    assert int((denominator <= 0).sum()) >= 1 and 1 <= int((~healthy).sum()) < 12
    return attention, x, healthy


def test_floor_keeps_the_authors_formula_where_healthy_and_bounds_the_rest():
    attention, x, healthy = _unhealthy_case()
    authors = LinearAttention(2, 16, rope_dim=8, floor=0.0)
    authors.load_state_dict(attention.state_dict())
    with torch.no_grad():
        y, y_authors = attention(x, x, x, None, None), authors(x, x, x, None, None)
        values = attention.linear_v(x)
    torch.testing.assert_close(y[0].double(), _naive(attention, x, [12], "relu", 8)[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(
        y_authors[0].double(), _naive(authors, x, [12], "relu", 8, floor=0.0)[0], atol=1e-3, rtol=1e-5
    )
    assert torch.equal(y[0, healthy], y_authors[0, healthy])  # bit-identical wherever the denominator is healthy
    # elsewhere every attention output is at most max|v| / floor, so the layer output is bounded accordingly ...
    out_layer = attention.linear_out
    bound = out_layer.weight.abs().sum(dim=1) * values.abs().max() / 0.01 + out_layer.bias.abs()
    assert bool((y[0, ~healthy].abs() <= bound).all())
    # ... while the authors' clamp at 1e-6 multiplies the numerator by up to 1e6 there
    assert float(y_authors[0, ~healthy].abs().max()) > 1e3 * float(y[0, ~healthy].abs().max())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_is_finite_and_close_to_float32(dtype):
    attention, x, _ = _unhealthy_case()
    x.requires_grad_(True)
    reference = attention(x, x, x, None, None)
    with torch.autocast("cpu", dtype=dtype):
        y = attention(x, x, x, None, None)
    assert y.dtype == dtype  # the projections still run in the autocast dtype
    tolerance = {torch.float16: 4e-3, torch.bfloat16: 3e-2}[dtype]  # a few units of the dtype's precision
    torch.testing.assert_close(y.float(), reference, atol=tolerance, rtol=tolerance)
    y.float().square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in attention.parameters())


def test_padding_invariance():
    torch.manual_seed(1)
    attention = LinearAttention(2, 64)
    alone = torch.randn(1, 7, 64)
    batch = torch.randn(3, 12, 64) * 5  # garbage in the padded frames, even non-finite
    batch[1, :7] = alone[0]
    batch[1, 8], batch[1, 9, :3], batch[2, 11] = float("nan"), float("inf"), -float("inf")
    mask = torch.tensor([12, 7, 10])[:, None] > torch.arange(12)[None, :]
    y_alone = attention(alone, alone, alone, None, torch.ones(1, 1, 7, dtype=torch.bool))
    y_batch = attention(batch, batch, batch, None, mask.unsqueeze(1))
    torch.testing.assert_close(y_batch[1, :7], y_alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(attention(batch, batch, batch, None, mask), y_batch, equal_nan=True)  # (B, T) mask
    for b, length in enumerate([12, 7, 10]):
        assert torch.isfinite(y_batch[b, :length]).all()


def test_no_mask_means_all_valid_and_pos_emb_ignored():
    torch.manual_seed(2)
    attention = LinearAttention(2, 8)
    x = torch.randn(2, 5, 8)
    full = torch.ones(2, 1, 5, dtype=torch.bool)
    torch.testing.assert_close(attention(x, x, x, torch.randn(1, 9, 8), None), attention(x, x, x, None, full))


def test_gradients_reach_all_projections():
    attention = LinearAttention(2, 8)
    x = torch.randn(2, 5, 8, requires_grad=True)
    attention(x, x, x, None, None).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attention.parameters())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"feature_map": "softmax"}, "feature_map"),
        ({"denominator": "both"}, "denominator"),
        ({"rope_dim": 3}, "rope_dim"),
        ({"rope_dim": 10}, "rope_dim"),
        ({"eps": 0.0}, "eps"),
        ({"floor": 1.0}, "floor"),
        ({"floor": -0.1}, "floor"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LinearAttention(2, 16, **kwargs)


def test_bad_mask_shape():
    attention = LinearAttention(2, 8)
    x = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match="mask"):
        attention(x, x, x, None, torch.ones(2, 5, 5, dtype=torch.bool))
