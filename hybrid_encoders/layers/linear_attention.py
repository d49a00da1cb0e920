"""HybridFormer's kernelised linear attention (the "LA" of LASA) with RoPE, in the O(T·d²) right-product form.

The paper body is not public; the formula is the one of the authors' linear-attention code (LMLA
``attention_linear.py``, the RoPE variant, see docs/hybridformer.md). Per head, with ``φ`` the kernel feature map and
``R_t`` the rotary rotation of position ``t`` (applied after ``φ`` to the first ``rope_dim`` channels):

    q̃_t = R_t φ(q_t),   k̃_s = R_s φ(k_s)
    o_t = q̃_tᵀ (Σ_s k̃_s v_sᵀ) / D_t,   D_t = max(q̃_tᵀ Σ_s k̃_s,  floor · |φ(q_t)| Σ_s |φ(k_s)|,  eps)

which equals the "left product" ``Σ_s (q̃_t·k̃_s) v_s / D_t`` but never forms a T x T matrix. We always use the right
product (the authors train with the left one; the two are algebraically identical).

The denominator. The authors divide by the rotated sum ``q̃_t·Σ_s k̃_s`` clamped at 1e-6. The rotated scores
``q̃_t·k̃_s`` are not positive (a rotation of non-negative features can point anywhere), so the "weights"
``q̃_t·k̃_s / Σ_s q̃_t·k̃_s`` still sum to one but no longer form an average: where the sum nears zero they grow without
bound, and where it is <= 0 the clamp turns the output into the numerator times 10⁶. That is not attention but an
overflow (NaN under fp16 at random initialisation with d_k = 16), which is why RoFormer §3.3 keeps the denominator
unrotated (``denominator="unrotated"``: ``φ(q_t)·Σ_s φ(k_s) >= 0``). We keep the authors' rotated default and make
both safe with a scale-aware floor: since rotations keep norms, ``|q̃_t·k̃_s| <= |φ(q_t)| |φ(k_s)|``, so every output
channel satisfies ``|o_t| <= max_s |v_s| / floor`` whenever ``D_t >= floor · |φ(q_t)| Σ_s |φ(k_s)|``. With
``floor = 0.01`` the output is at most 100 times the largest value, and wherever the denominator is healthy (at random
initialisation we measured at least 0.03 of that bound and typically 0.25-0.3 at d_k >= 36) the result is exactly the
authors' formula; ``floor=0`` restores it everywhere (``eps`` is then the only guard).

Precision. The feature map, RoPE, the (d_k x d_k) summaries and the division run in float32 (float64 stays float64),
with autocast switched off for them: under fp16 autocast the sums over T frames and the division overflow or cancel
(the normaliser loses its sign), and this core is O(T·d²/H), cheap next to the four projections, which stay in the
autocast dtype. The output is cast back to the input's dtype before ``linear_out``.

Our other change to the authors' code: padded frames are excluded (``φ(k)`` and ``v`` are set to zero there, by
``masked_fill`` so that even non-finite values cannot leak), so a sequence gives the same output alone and in a padded
batch.
"""

from typing import Optional

import torch
from torch import nn

from hybrid_encoders.layers.rotary import RotaryEmbedding

FEATURE_MAPS = ("relu", "elu_plus_one")
DENOMINATORS = ("rotated", "unrotated")


def _feature_map(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return torch.relu(x)
    return nn.functional.elu(x) + 1.0


class LinearAttention(nn.Module):
    """Multi-head kernelised linear self-attention, a drop-in for the relative-position softmax attention.

    Args:
        n_head: number of heads H.
        n_feat: model dimension D (divisible by H; d_k = D / H).
        feature_map: ``"relu"`` (the authors' default) or ``"elu_plus_one"`` (``1 + ELU``, their LMEC paper).
        rope_dim: channels per head that RoPE rotates (even, 0 < rope_dim <= d_k); None = d_k // 2 (authors), 0 = no
            RoPE.
        rope_theta: RoPE base.
        denominator: ``"rotated"`` (authors: q̃·Σk̃) or ``"unrotated"`` (RoFormer §3.3: φ(q)·Σφ(k)).
        eps: lower clamp of the denominator (authors: 1e-6).
        floor: the denominator is at least ``floor · |φ(q_t)| Σ_s |φ(k_s)|`` (module docstring), in [0, 1); 0 = the
            authors' formula with only ``eps``.
    """

    def __init__(
        self,
        n_head: int,
        n_feat: int,
        feature_map: str = "relu",
        rope_dim: Optional[int] = None,
        rope_theta: float = 10000.0,
        denominator: str = "rotated",
        eps: float = 1e-6,
        floor: float = 0.01,
    ):
        super().__init__()
        if n_head <= 0 or n_feat % n_head != 0:
            raise ValueError(f"LinearAttention: n_feat={n_feat} must be divisible by n_head={n_head}")
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"LinearAttention: feature_map must be one of {list(FEATURE_MAPS)}, got {feature_map!r}")
        if denominator not in DENOMINATORS:
            raise ValueError(f"LinearAttention: denominator must be one of {list(DENOMINATORS)}, got {denominator!r}")
        if not eps > 0:
            raise ValueError(f"LinearAttention: eps must be > 0, got {eps!r}")
        if not 0.0 <= floor < 1.0:
            raise ValueError(f"LinearAttention: floor must be in [0, 1), got {floor!r}")
        self.n_head = n_head
        self.d_k = n_feat // n_head
        if rope_dim is None:
            rope_dim = self.d_k // 2
        if rope_dim < 0 or rope_dim > self.d_k or rope_dim % 2 != 0:
            raise ValueError(
                f"LinearAttention: rope_dim must be an even number in [0, d_k={self.d_k}], got {rope_dim}"
            )
        self.feature_map = feature_map
        self.denominator = denominator
        self.eps = eps
        self.floor = floor
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.rotary = RotaryEmbedding(rope_dim, rope_theta) if rope_dim > 0 else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-a, a) with a = D^-1/2 for the projection weights and biases (the backbone's attention init)."""
        for layer in (self.linear_q, self.linear_k, self.linear_v, self.linear_out):
            bound = layer.in_features**-0.5
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.uniform_(layer.bias, -bound, bound)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, d_k)."""
        return x.unflatten(-1, (self.n_head, self.d_k)).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        pos_emb: Optional[torch.Tensor],
        mask: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Attend; same signature as the relative-position softmax attention.

        Args:
            query, key, value: (B, T, D); self-attention passes the same tensor three times.
            pos_emb: ignored (positions enter through RoPE); accepted so the two attention kinds are interchangeable.
            mask: (B, 1, T) or (B, T) bool, True at valid frames (ESPnet convention), or None for no padding.

        Returns:
            (B, T, D). Rows of padded query frames are finite but meaningless.
        """
        if mask is not None and mask.numel() != key.size(0) * key.size(1):
            raise ValueError(
                f"LinearAttention: mask must be (B, 1, T) or (B, T) with B, T = {tuple(key.shape[:2])}, "
                f"got {tuple(mask.shape)}"
            )
        q = self._heads(self.linear_q(query))
        k = self._heads(self.linear_k(key))
        v = self._heads(self.linear_v(value))
        padded = None if mask is None else ~mask.reshape(mask.size(0), 1, -1, 1).bool()  # (B, 1, T, 1)
        compute_dtype = torch.promote_types(q.dtype, torch.float32)
        with torch.autocast(query.device.type, enabled=False):
            out = self._attend(q.to(compute_dtype), k.to(compute_dtype), v.to(compute_dtype), padded)
        return self.linear_out(out.to(query.dtype).transpose(1, 2).flatten(-2))

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padded: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The attention core of the module docstring on (B, H, T, d_k) projections; ``padded`` (B, 1, T, 1) is True
        at padded frames. Returns (B, H, T, d_k)."""
        q = _feature_map(self.feature_map, q)
        k = _feature_map(self.feature_map, k)
        if padded is not None:
            k = k.masked_fill(padded, 0.0)
            v = v.masked_fill(padded, 0.0)
        q_rotated = self.rotary(q) if self.rotary is not None else q
        k_rotated = self.rotary(k) if self.rotary is not None else k
        context = torch.matmul(k_rotated.transpose(-2, -1), v)  # (B, H, d_k, d_k) = Σ_s k̃_s v_sᵀ
        if self.denominator == "rotated":
            normaliser = torch.matmul(q_rotated, k_rotated.sum(dim=-2, keepdim=True).transpose(-2, -1))
        else:
            normaliser = torch.matmul(q, k.sum(dim=-2, keepdim=True).transpose(-2, -1))
        # |φ(q_t)| Σ_s |φ(k_s)| >= Σ_s |q̃_t·k̃_s|: the floor bounds every output by max|v| / floor
        score_bound = q.norm(dim=-1, keepdim=True) * k.norm(dim=-1, keepdim=True).sum(dim=-2, keepdim=True)
        normaliser = torch.maximum(normaliser, self.floor * score_bound).clamp_min(self.eps)
        return torch.matmul(q_rotated, context) / normaliser  # (B, H, T, d_k)
