"""Zipformer attention (paper §3.2, spec §5.2-5.4): weights computed once per layer and shared three times.

* :class:`RelPositionAttentionWeights` turns a layer's input into softmax attention weights (B, H, T, T), with
  relative positions from :class:`~hybrid_encoders.layers.compact_rel_positional.CompactRelPositionalEncoding`.
* :class:`SelfAttention` applies given weights to its own value projection (used twice per layer).
* :class:`NonlinAttention` applies head 0 of the weights inside a tanh-gated, multiplicative block.
"""

import random
from typing import Optional, Tuple

import torch
from torch import nn

from hybrid_encoders.layers.export_mode import is_exporting
from hybrid_encoders.layers.lean_autograd import TANH
from hybrid_encoders.layers.lean_autograd import gate as lean_gate
from hybrid_encoders.layers.lean_autograd import softmax as lean_softmax
from hybrid_encoders.layers.relative_shift import add_relative_scores, add_relative_scores_, relative_scores
from hybrid_encoders.layers.swoosh import ScaledLinear
from hybrid_encoders.regularization.balancer import Balancer, penalize_abs_values_gt
from hybrid_encoders.regularization.scheduled_float import FloatLike, ScheduledFloat, whitening_schedule
from hybrid_encoders.regularization.whiten import Whiten

MASKED_SCORE = -1000.0  # icefall fills masked scores with a finite value (exp(-1000) == 0 in float32)


class RelPositionAttentionWeights(nn.Module):
    """Multi-head attention weights with relative positions (icefall RelPositionMultiheadAttentionWeights).

    ``score[h, i, j] = q_i . k_j + p_i . P_h[j - i]`` with no 1/sqrt(d) factor (folded into the in_proj init,
    ``query_head_dim ** -0.25`` on both q and k); padded keys get -1000 before the softmax.

    Args:
        embed_dim: input channels C.
        pos_dim: size of the positional encodings.
        num_heads: heads H.
        query_head_dim: query/key size per head.
        pos_head_dim: positional-query size per head.
        pos_emb_skip_rate: probability of dropping the positional term for a whole batch (training).

    The skip draws once per training forward, as icefall does, so the outputs follow icefall's distribution exactly
    (same probability, same whole-batch correlation, same expectation). A skipped term is not left out of the graph
    but made inactive: the output is the same, and the gradients of ``linear_pos`` and of the positional rows of
    ``in_proj`` are exactly zero instead of missing. DistributedDataParallel with ESPnet's default
    ``unused_parameters: false`` needs a gradient for every parameter on every step; icefall's ScaledAdam treats a
    missing gradient as zero, so the update is icefall's too. A per-sequence skip would change the correlation across
    the batch and still leave ``linear_pos`` without a gradient when every sequence skips. A skipped term costs only
    the (small) projections: :func:`~hybrid_encoders.layers.relative_shift.add_relative_scores` with ``active=False``
    adds nothing and returns zero gradients.

    Parameters: ``in_proj`` ((2 dq + dp) H, C) packing [q | k | p], head-major in each block; ``linear_pos``
    (dp H, pos_dim), no bias.
    """

    def __init__(
        self,
        embed_dim: int,
        pos_dim: int,
        num_heads: int,
        query_head_dim: int,
        pos_head_dim: int,
        pos_emb_skip_rate: Optional[FloatLike] = None,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.query_head_dim = query_head_dim
        self.pos_head_dim = pos_head_dim
        self.in_proj = ScaledLinear(
            embed_dim, (2 * query_head_dim + pos_head_dim) * num_heads, initial_scale=query_head_dim**-0.25
        )
        self.linear_pos = ScaledLinear(pos_dim, num_heads * pos_head_dim, bias=False, initial_scale=0.05)
        if pos_emb_skip_rate is None:
            pos_emb_skip_rate = ScheduledFloat((0.0, 0.5), (4000.0, 0.0))
        self.pos_emb_skip_rate = pos_emb_skip_rate
        self.balance_keys = Balancer(
            query_head_dim * num_heads, channel_dim=-1, min_positive=0.4, max_positive=0.6, min_abs=0.0,
            max_abs=100.0, prob=0.025,
        )  # fmt: skip
        self.whiten_keys = Whiten(num_heads, whitening_schedule(3.0), prob=(0.025, 0.25), grad_scale=0.025)

    def forward(
        self,
        x: torch.Tensor,
        pos_emb: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor] = None,
        attn_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            x: (B, T, C) layer input.
            pos_emb: (2T - 1, pos_dim) encodings of offsets -(T-1) .. T-1.
            key_padding_mask: (B, T) bool, True = padded key; or None.
            attn_mask: (T, T) bool, True where query i may not see key j (chunked causal attention); or None.

        Returns:
            (B, H, T, T) attention weights (rows sum to 1).
        """
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        if attn_mask is not None:
            mask = attn_mask if mask is None else mask | attn_mask
        return self.attention_weights(*self.project(x), pos_emb, mask)

    def project(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three parts of ``in_proj(x)`` for (B, T, C) input: queries (B, H, T, dq), keys (B, T, H dq) (frame-major,
        the layout in which streaming caches past keys) and positional queries (B, H, T, dp)."""
        batch, frames, _ = x.shape
        heads, dq, dp = self.num_heads, self.query_head_dim, self.pos_head_dim
        projected = self.in_proj(x)
        q = projected[..., : dq * heads].reshape(batch, frames, heads, dq).transpose(1, 2)
        k = self.whiten_keys(self.balance_keys(projected[..., dq * heads : 2 * dq * heads]))
        p = projected[..., 2 * dq * heads :].reshape(batch, frames, heads, dp).transpose(1, 2)
        return q, k, p

    def attention_weights(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        p: torch.Tensor,
        pos_emb: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Weights of T queries over K >= T keys whose last T frames are the queries' own (K > T: a streaming chunk
        after K - T cached keys).

        Args:
            q, p: (B, H, T, dq) queries and (B, H, T, dp) positional queries from :meth:`project`.
            k: (B, K, H dq) keys.
            pos_emb: (K + T - 1, pos_dim) encodings of offsets -(K-1) .. T-1.
            mask: bool, broadcastable to (B, H, T, K), True = masked; or None.

        Returns:
            (B, H, T, K) attention weights (rows sum to 1).
        """
        batch, heads, frames, dq = q.shape
        keys = k.size(1)
        k = k.reshape(batch, keys, heads, dq).permute(0, 2, 3, 1)  # (B, H, dq, K)
        if is_exporting() and mask is not None and mask.shape[1:3] == (1, 1):
            # A key-padding mask enters the product as one more channel, 1 for every query and MASKED_SCORE for a
            # padded key: no pass over the (B, H, T, K) scores (onnxruntime's broadcasting Where over them took 12 ms
            # per layer at 30 s, Zipformer-M). Padded keys get MASKED_SCORE added instead of set: their softmax
            # weight is 0 in float32 either way.
            q = torch.cat([q, q.new_ones(batch, heads, frames, 1)], dim=-1)
            k = torch.cat([k, (mask.to(k.dtype) * MASKED_SCORE).expand(batch, heads, 1, keys)], dim=-2)
            mask = None
        scores = torch.matmul(q, k)  # (B, H, T, K)

        skip_positions = self.training and random.random() < float(self.pos_emb_skip_rate)
        if scores.requires_grad or not skip_positions:
            positions = self.linear_pos(pos_emb).reshape(keys + frames - 1, heads, -1).permute(1, 2, 0)  # H, dp, K+T-1
            if is_exporting():  # a static graph: the whole product, shifted by slices
                scores = scores + relative_scores(p, positions)
            elif scores.requires_grad:
                # a skipped term stays in the graph: linear_pos gets a (zero) gradient (class docstring)
                scores = add_relative_scores(scores, p, positions, active=not skip_positions)
            else:
                add_relative_scores_(scores, p, positions)

        if self.training and random.random() < 0.1:
            scores = penalize_abs_values_gt(scores, limit=25.0, penalty=1e-4)
        if mask is not None:
            if scores.requires_grad:
                scores = scores.masked_fill(mask, MASKED_SCORE)
            else:
                scores.masked_fill_(mask, MASKED_SCORE)
        if scores.requires_grad:
            return lean_softmax(scores, dim=-1)
        return torch.softmax(scores, dim=-1, out=scores)  # in place: no second (B, H, T, T) tensor at inference


class SelfAttention(nn.Module):
    """Applies precomputed attention weights to a value projection (icefall SelfAttention).

    Args:
        embed_dim: channels C.
        num_heads: heads H (must match the weights).
        value_head_dim: value size per head.

    Shapes: ``forward(x (B, T, C), weights (B, H, T, T)) -> (B, T, C)``.
    """

    def __init__(self, embed_dim: int, num_heads: int, value_head_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj = nn.Linear(embed_dim, num_heads * value_head_dim)
        self.out_proj = ScaledLinear(num_heads * value_head_dim, embed_dim, initial_scale=0.05)
        self.whiten = Whiten(1, whitening_schedule(7.5, ratio=3.0), prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.attend(self.in_proj(x), weights)

    def attend(self, values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Values (B, K, H dv) (``in_proj`` of the key frames) weighted by (B, H, T, K) weights -> (B, T, C)."""
        batch, keys, _ = values.shape
        values = values.reshape(batch, keys, self.num_heads, -1).transpose(1, 2)  # (B, H, K, dv)
        attended = torch.matmul(weights, values).transpose(1, 2).reshape(batch, weights.size(2), -1)
        return self.whiten(self.out_proj(attended))


class NonlinAttention(nn.Module):
    """Attention-weighted, gated block (icefall NonlinAttention): ``out_proj((W0 @ (x * tanh(s))) * y)``.

    ``s | x | y`` are the three equal parts of ``in_proj``'s output; W0 is attention head 0.

    Args:
        embed_dim: channels C.
        hidden_channels: width of each part (3C/4 in Zipformer).

    Shapes: ``forward(x (B, T, C), weights (B, T, T)) -> (B, T, C)``.
    """

    def __init__(self, embed_dim: int, hidden_channels: int):
        super().__init__()
        self.in_proj = nn.Linear(embed_dim, 3 * hidden_channels)
        self.out_proj = ScaledLinear(hidden_channels, embed_dim, initial_scale=0.05)
        self.balancer = Balancer(
            hidden_channels, channel_dim=-1, min_positive=ScheduledFloat((0.0, 0.25), (20000.0, 0.05)),
            max_positive=ScheduledFloat((0.0, 0.75), (20000.0, 0.95)), min_abs=0.5, max_abs=5.0,
        )  # fmt: skip
        self.whiten1 = Whiten(1, whitening_schedule(5.0), prob=(0.025, 0.25), grad_scale=0.01)
        self.whiten2 = Whiten(1, whitening_schedule(5.0, ratio=3.0), prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.attend(*self.project(x), weights)

    def project(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) -> the gated values ``x * tanh(s)`` and the multiplier ``y``, both (B, T, hidden)."""
        gate, values, multiplier = self.in_proj(x).chunk(3, dim=-1)
        return lean_gate(self.whiten1(values), self.balancer(gate), TANH), multiplier  # saves no tanh output

    def attend(self, values: torch.Tensor, multiplier: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Gated values (B, K, hidden) of the key frames, multiplier (B, T, hidden), weights (B, T, K) -> (B, T, C)."""
        attended = torch.matmul(weights, values)  # (B, T, K) @ (B, K, hidden)
        return self.whiten2(self.out_proj(attended * multiplier))
