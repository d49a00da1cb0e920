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
