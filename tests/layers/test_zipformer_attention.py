import pytest
import torch

from hybrid_encoders.layers import relative_shift
from hybrid_encoders.layers.relative_shift import (
    add_relative_scores,
    add_relative_scores_,
    relative_scores,
    relative_to_absolute,
)
from hybrid_encoders.layers.zipformer_attention import NonlinAttention, RelPositionAttentionWeights, SelfAttention


@pytest.mark.parametrize("exporting", [False, True], ids=["as_strided", "export_spare_column"])
@pytest.mark.parametrize("frames, keys", [(4, 4), (1, 1), (1, 5), (3, 7), (6, 6)])
def test_relative_scores_indexing(frames, keys, exporting, monkeypatch):
    """Both forms (eager strided view; the export form's spare column and slices) against a loop over (i, j); K > T:
    cached streaming keys."""
    monkeypatch.setattr(relative_shift, "is_exporting", lambda: exporting)
    queries = torch.randn(2, 3, frames, 4, dtype=torch.float64)
    encodings = torch.randn(3, 4, keys + frames - 1, dtype=torch.float64)
    out = relative_scores(queries, encodings)
    assert out.shape == (2, 3, frames, keys)
    for i in range(frames):
        for j in range(keys):
            offset = j - (keys - frames) - i  # key position minus query position
            expected = (queries[..., i, :] * encodings[..., :, offset + keys - 1]).sum(-1)
            torch.testing.assert_close(out[..., i, j], expected)


def _slow_weights(module, x, pos_emb, mask):
    heads, dq, dp = module.num_heads, module.query_head_dim, module.pos_head_dim
    batch, frames, _ = x.shape
    projected = module.in_proj(x)
    positions = module.linear_pos(pos_emb)  # (2T-1, H dp)
    out = torch.empty(batch, heads, frames, frames, dtype=x.dtype)
    for b in range(batch):
        for h in range(heads):
            for i in range(frames):
                q = projected[b, i, h * dq : (h + 1) * dq]
                p = projected[b, i, 2 * dq * heads + h * dp : 2 * dq * heads + (h + 1) * dp]
                row = []
                for j in range(frames):
                    k = projected[b, j, dq * heads + h * dq : dq * heads + (h + 1) * dq]
                    pos = positions[frames - 1 + j - i, h * dp : (h + 1) * dp]
                    row.append(-1000.0 if mask[b, j] else float(q @ k + p @ pos))
                out[b, h, i] = torch.softmax(torch.tensor(row, dtype=x.dtype), dim=0)
    return out


def test_attention_weights_match_slow_reference():
    torch.manual_seed(0)
    module = RelPositionAttentionWeights(12, pos_dim=6, num_heads=2, query_head_dim=4, pos_head_dim=3).double().eval()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    pos_emb = torch.randn(9, 6, dtype=torch.float64)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    with torch.no_grad():
        torch.testing.assert_close(module(x, pos_emb, mask), _slow_weights(module, x, pos_emb, mask))


def test_self_and_nonlin_attention_match_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    weights = torch.softmax(torch.randn(2, 2, 5, 5, dtype=torch.float64), dim=-1)
    sa = SelfAttention(8, num_heads=2, value_head_dim=3).double().eval()
    v = sa.in_proj(x)
    heads = [weights[:, h] @ v[..., 3 * h : 3 * h + 3] for h in range(2)]
    torch.testing.assert_close(sa(x, weights), sa.out_proj(torch.cat(heads, dim=-1)))
    na = NonlinAttention(8, hidden_channels=6).double().eval()
    s, u, y = na.in_proj(x).split(6, dim=-1)
    torch.testing.assert_close(na(x, weights[:, 0]), na.out_proj((weights[:, 0] @ (u * torch.tanh(s))) * y))


@pytest.mark.parametrize("frames, keys", [(11, 11), (5, 9)])  # K > T: cached streaming keys
def test_blockwise_relative_scores_equal_the_full_shift(frames, keys):
    torch.manual_seed(0)
    scores = torch.randn(2, 3, frames, keys, dtype=torch.float64)
    p = torch.randn(2, 3, frames, 4, dtype=torch.float64)
    positions = torch.randn(3, 4, keys + frames - 1, dtype=torch.float64)
    expected = scores + relative_to_absolute(torch.matmul(p, positions))
    for block in (1, 3, 4, 11, 64):
        blockwise = scores.clone()
        add_relative_scores_(blockwise, p, positions, block=block)
        torch.testing.assert_close(blockwise, expected)


@pytest.mark.parametrize("active", [True, False])
@pytest.mark.parametrize("frames, keys, block", [(11, 11, 4), (11, 11, 64), (5, 9, 2), (7, 7, 1)])
def test_differentiable_blockwise_relative_scores_match_autograd_of_the_full_product(frames, keys, block, active):
    """Values and all three gradients against autograd through the whole (B, H, T, K + T - 1) product, float64;
    blocks that divide T, that do not (a shorter last block), one block, one query per block."""
    torch.manual_seed(1)
    content = torch.randn(2, 3, frames, keys, dtype=torch.float64, requires_grad=True)
    p = torch.randn(2, 3, frames, 4, dtype=torch.float64, requires_grad=True)
    positions = torch.randn(3, 4, keys + frames - 1, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 3, frames, keys, dtype=torch.float64)

    expected = content * 1.0 + (1.0 if active else 0.0) * relative_scores(p, positions)
    expected_grads = torch.autograd.grad(expected, (content, p, positions), upstream)
    blockwise = add_relative_scores(content * 1.0, p, positions, active=active, block=block)
    grads = torch.autograd.grad(blockwise, (content, p, positions), upstream)

    torch.testing.assert_close(blockwise, expected)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)
    if not active:  # a skipped term: zero gradients, not missing ones
        assert not grads[1].any() and not grads[2].any()


def test_gradient_and_inference_paths_agree():
    torch.manual_seed(0)
    module = RelPositionAttentionWeights(16, pos_dim=8, num_heads=2, query_head_dim=4, pos_head_dim=2).eval()
    x = torch.randn(2, 300, 16)
    pos_emb = torch.randn(599, 8)
    mask = torch.zeros(2, 300, dtype=torch.bool)
    mask[1, 250:] = True
    with torch.no_grad():
        inference = module(x, pos_emb, mask)
    with_grad = module(x.requires_grad_(True), pos_emb, mask)
    torch.testing.assert_close(inference, with_grad.detach(), rtol=1e-5, atol=1e-6)
