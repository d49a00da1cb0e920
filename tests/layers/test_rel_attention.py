import math

import pytest
import torch

from hybrid_encoders.layers.rel_attention import RelPositionMultiHeadedAttention
from hybrid_encoders.layers.rel_positional import RelPositionalEncoding


def _slow_reference(attention, x, pos_emb, mask):
    """Per-head loops over the Transformer-XL score: ((q_i + u) k_j + (q_i + v) p_{i-j}) / sqrt(d_k)."""
    batch, length, _ = x.shape
    h, d_k = attention.h, attention.d_k
    q = attention.linear_q(x).view(batch, length, h, d_k)
    k = attention.linear_k(x).view(batch, length, h, d_k)
    v = attention.linear_v(x).view(batch, length, h, d_k)
    p = attention.linear_pos(pos_emb[0]).view(-1, h, d_k)
    out = torch.zeros(batch, length, h, d_k)
    for b in range(batch):
        for head in range(h):
            for i in range(length):
                scores = torch.empty(length)
                for j in range(length):
                    row = length - 1 - (i - j)
                    scores[j] = (q[b, i, head] + attention.pos_bias_u[head]) @ k[b, j, head]
                    scores[j] += (q[b, i, head] + attention.pos_bias_v[head]) @ p[row, head]
                scores = scores / math.sqrt(d_k)
                scores[~mask[b, 0]] = -float("inf")
                out[b, i, head] = torch.softmax(scores, 0) @ v[b, :, head]
    return attention.linear_out(out.reshape(batch, length, h * d_k))


def test_matches_slow_reference_with_padding():
    torch.manual_seed(0)
    attention = RelPositionMultiHeadedAttention(2, 8).eval()
    torch.nn.init.normal_(attention.pos_bias_u)
    torch.nn.init.normal_(attention.pos_bias_v)
    x = torch.randn(2, 6, 8)
    pos_emb = RelPositionalEncoding(8)(6)
    mask = torch.tensor([[[True] * 6], [[True] * 4 + [False] * 2]])
    with torch.no_grad():
        torch.testing.assert_close(
            attention(x, x, x, pos_emb, mask), _slow_reference(attention, x, pos_emb, mask), atol=1e-5, rtol=0
        )


def test_equals_espnet_attention_with_same_weights():
    espnet_attention = pytest.importorskip("espnet.nets.pytorch_backend.transformer.attention")
    torch.manual_seed(0)
    ours = RelPositionMultiHeadedAttention(4, 32).eval()
    torch.nn.init.normal_(ours.pos_bias_u)
    theirs = espnet_attention.RelPositionMultiHeadedAttention(4, 32, 0.0).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 11, 32)
    pos_emb = RelPositionalEncoding(32)(11)
    mask = (torch.arange(11)[None, :] < torch.tensor([11, 7, 1])[:, None]).unsqueeze(1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, x, x, pos_emb, mask), theirs(x, x, x, pos_emb, mask), atol=1e-5, rtol=0)


def test_paper_initialisation_and_head_check():
    attention = RelPositionMultiHeadedAttention(4, 64)
    assert attention.pos_bias_u.abs().max() == 0 and attention.pos_bias_v.abs().max() == 0
    assert attention.linear_q.weight.abs().max() <= 64**-0.5
    assert attention.linear_q.bias.abs().max() > 0  # TF draws biases from the same uniform
    with pytest.raises(ValueError, match="divisible"):
        RelPositionMultiHeadedAttention(3, 64)


def _plain_formulation(attention, x, pos_emb, mask):
    """The score formula vectorised with a gather of every query's offsets (autograd's own gradients)."""
    batch, length, _ = x.shape
    h, d_k = attention.h, attention.d_k
    q = attention.linear_q(x).view(batch, length, h, d_k).transpose(1, 2)
    k = attention.linear_k(x).view(batch, length, h, d_k).transpose(1, 2)
    v = attention.linear_v(x).view(batch, length, h, d_k).transpose(1, 2)
    p = attention.linear_pos(pos_emb[0]).view(-1, h, d_k).transpose(0, 1)  # (H, 2T - 1, d_k)
    content = (q + attention.pos_bias_u.unsqueeze(1)) @ k.transpose(-2, -1)
    every_offset = (q + attention.pos_bias_v.unsqueeze(1)) @ p.transpose(-2, -1)  # (B, H, T, 2T - 1)
    rows, columns = torch.meshgrid(torch.arange(length), torch.arange(length), indexing="ij")
    index = (length - 1 - rows + columns).expand(batch, h, length, length)  # distance i - j at column T - 1 - (i - j)
    scores = (content + every_offset.gather(-1, index)) / math.sqrt(d_k)
    scores = scores.masked_fill(~mask.unsqueeze(1), -float("inf"))
    out = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(batch, length, h * d_k)
    return attention.linear_out(out)


@pytest.mark.parametrize("length", [1, 7, 300])  # 300 frames: two blocks of queries for the positional term
def test_cpu_training_path_equals_plain_formulation_with_gradients(length):
    torch.manual_seed(0)
    attention = RelPositionMultiHeadedAttention(2, 8).double().train()
    torch.nn.init.normal_(attention.pos_bias_u)
    torch.nn.init.normal_(attention.pos_bias_v)
    x = torch.randn(2, length, 8, dtype=torch.float64, requires_grad=True)
    pos_emb = RelPositionalEncoding(8)(length).double()
    mask = (torch.arange(length)[None, :] < torch.tensor([length, max(1, length - 3)])[:, None]).unsqueeze(1)
    out = attention(x, x, x, pos_emb, mask)
    expected = _plain_formulation(attention, x, pos_emb, mask)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    with torch.no_grad():  # the scaled_dot_product_attention path
        torch.testing.assert_close(attention(x, x, x, pos_emb, mask), expected, rtol=1e-10, atol=1e-10)
    weight = torch.randn_like(out)
    inputs = [x, *attention.parameters()]
    for mine, theirs in zip(
        torch.autograd.grad((out * weight).sum(), inputs), torch.autograd.grad((expected * weight).sum(), inputs)
    ):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-10)


def test_cpu_training_path_drops_attention_weights():
    torch.manual_seed(0)
    attention = RelPositionMultiHeadedAttention(2, 8, dropout_rate=0.5).train()
    x = torch.randn(1, 40, 8)
    pos_emb = RelPositionalEncoding(8)(40)
    torch.nn.init.zeros_(attention.linear_out.bias)
    attention.linear_out.weight.data = torch.eye(8)  # the output is the context itself
    torch.nn.init.zeros_(attention.linear_v.bias)
    attention.linear_v.weight.data = torch.eye(8)
    mask = torch.ones(1, 1, 40, dtype=torch.bool)
    x = x.requires_grad_()
    dropped = attention(x, x, x, pos_emb, mask)
    with torch.no_grad():
        full = attention.eval()(x, x, x, pos_emb, mask)
    assert not torch.allclose(dropped, full)
    # inverted dropout keeps the expectation: averaged over the 40 frames the two agree roughly
    torch.testing.assert_close(dropped.mean(), full.mean(), atol=0.1, rtol=0)
