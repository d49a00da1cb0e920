"""Relative-position multi-head self-attention (Transformer-XL, Dai et al. 2019, Sec. 3.3), as in Conformer and
Squeezeformer (paper Sec. 3; TF ``RelPositionMultiHeadAttention``, NeMo's class of the same name, ESPnet's
``RelPositionMultiHeadedAttention``; the three compute the same function).

With per-head queries q_i, keys k_j, relative encodings p_r (rows of
:class:`~hybrid_encoders.layers.rel_positional.RelPositionalEncoding` projected by ``linear_pos``) and the learned
biases u, v:

    score(i, j) = ((q_i + u) . k_j + (q_i + v) . p_{i-j}) / sqrt(d_k)

Keys at padded positions get no weight, so valid outputs do not depend on padding. Parameter names are ESPnet's
(``linear_q/k/v/out``, ``linear_pos``, ``pos_bias_u/v``).

Two ways to the same function. Inference, export and GPU training give the positional term to
``scaled_dot_product_attention`` as a score bias. CPU training, where that call falls back to its unfused
formulation, computes the scores itself: the positional term is added block of queries by block
(:func:`~hybrid_encoders.layers.relative_shift.add_relative_scores`, never the (B, H, T, 2T - 1) product nor its
zero-filled gradient), the 1 / sqrt(d_k) scale goes on the (B, T, d) queries rather than the (B, H, T, T) scores, and
only the softmax output is kept for the backward pass. A Squeezeformer-SM training step at 2 x 30 s spends
about 200 ms less in attention on the 2-core development CPU.
"""

import math
from typing import Optional

import torch
from torch import nn

from hybrid_encoders.layers.export_mode import is_exporting
from hybrid_encoders.layers.lean_autograd import dropout
from hybrid_encoders.layers.lean_autograd import softmax as lean_softmax
from hybrid_encoders.layers.relative_shift import add_relative_scores, relative_scores


class RelPositionMultiHeadedAttention(nn.Module):
    """Self-attention with relative sinusoidal positions; ESPnet's call signature.

    Args:
        n_head: number of heads H.
        n_feat: model dimension d (divisible by H).
        dropout_rate: dropout on the attention weights.
    """

    def __init__(self, n_head: int, n_feat: int, dropout_rate: float = 0.0):
        super().__init__()
        if n_feat % n_head != 0:
            raise ValueError(f"RelPositionMultiHeadedAttention: n_feat={n_feat} must be divisible by n_head={n_head}")
        self.h = n_head
        self.d_k = n_feat // n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_head, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_head, self.d_k))
        self.dropout_rate = dropout_rate
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Paper (TF) initialisation: projections U(-a, a), a = d^-1/2, weights and biases; u = v = 0."""
        for layer in (self.linear_q, self.linear_k, self.linear_v, self.linear_out, self.linear_pos):
            bound = layer.in_features**-0.5
            nn.init.uniform_(layer.weight, -bound, bound)
            if layer.bias is not None:
                nn.init.uniform_(layer.bias, -bound, bound)
        nn.init.zeros_(self.pos_bias_u)
        nn.init.zeros_(self.pos_bias_v)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        pos_emb: torch.Tensor,
        mask: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Attend.

        Args:
            query, key, value: (B, T, d); self-attention (the positional term assumes key length == query length).
            pos_emb: (1, 2T - 1, d) relative encodings for distances T-1 ... -(T-1).
            mask: (B, 1, T) or (B, T, T) bool, True where a key may be attended (ESPnet convention), or None.

        Returns:
            (B, T, d).
        """
        batch, length, _ = query.shape
        q = self.linear_q(query).view(batch, length, self.h, self.d_k)
        k = self.linear_k(key).view(batch, -1, self.h, self.d_k).transpose(1, 2)  # (B, H, T, d_k)
        v = self.linear_v(value).view(batch, -1, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos_emb).view(pos_emb.size(0), -1, self.h, self.d_k).transpose(1, 2)  # (1, H, 2T-1, d_k)
        if query.device.type == "cpu" and torch.is_grad_enabled() and not is_exporting():
            context = self._cpu_training_context(q, k, v, p, mask)
        else:
            context = self._biased_context(q, k, v, p, mask)
        return self.linear_out(context.transpose(1, 2).reshape(batch, length, self.h * self.d_k))

    def _biased_context(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: torch.Tensor, mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The attention context with the positional term as a score bias of ``scaled_dot_product_attention``
        (written out when exporting). Arguments and result as :meth:`_cpu_training_context`."""
        # (B, H, T, T) with position[..., i, j] = (q_i + v) . p at distance i - j (column r of p: distance T - 1 - r)
        position = relative_scores((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
        # The positional term enters scaled_dot_product_attention as an additive score bias, so the fused kernel
        # computes softmax(((q + u) k^T + position) / sqrt(d_k)) v without materialising the content scores.
        bias = position.to(v.dtype) / math.sqrt(self.d_k)
        if mask is not None and (is_exporting() or not mask.all()):
            # The most negative finite value, not -inf: a row without any valid key then stays finite.
            bias = bias.masked_fill(~mask.unsqueeze(1), torch.finfo(bias.dtype).min)
        content_query = (q + self.pos_bias_u).transpose(1, 2).to(v.dtype)
        if is_exporting():
            # the same formula written out: the ONNX exporter's decomposition of the fused kernel gives an output
            # whose strides break the reshape below (torch 2.11)
            scores = torch.matmul(content_query, k.to(v.dtype).transpose(-2, -1)) / math.sqrt(self.d_k) + bias
            return torch.matmul(torch.softmax(scores, dim=-1), v)
        return nn.functional.scaled_dot_product_attention(
            content_query, k.to(v.dtype), v, attn_mask=bias, dropout_p=self.dropout_rate if self.training else 0.0
        )

    def _cpu_training_context(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: torch.Tensor, mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The attention context with the scores computed here (module docstring).

        Args:
            q: (B, T, H, d_k) queries; k, v: (B, H, T, d_k); p: (1, H, 2T - 1, d_k) projected encodings;
            mask: as in :meth:`forward`.

        Returns:
            (B, H, T, d_k).
        """
        scale = self.d_k**-0.5
        content_query = ((q + self.pos_bias_u) * scale).transpose(1, 2).to(v.dtype)
        position_query = ((q + self.pos_bias_v) * scale).transpose(1, 2).to(v.dtype)
        scores = torch.matmul(content_query, k.to(v.dtype).transpose(-2, -1))  # (B, H, T, T)
        scores = add_relative_scores(scores, position_query, p[0].transpose(-2, -1).to(v.dtype))
        if mask is not None and not mask.all():
            scores = scores.masked_fill(~mask.unsqueeze(1), torch.finfo(scores.dtype).min)
        weights = dropout(lean_softmax(scores, dim=-1), self.dropout_rate, self.training)
        return torch.matmul(weights, v)
