"""HybridFormer's kernelised linear attention (the "LA" of LASA) with RoPE, in the O(T·d²) right-product form.

The paper body is not public; the formula is the one of the authors' linear-attention code (LMLA
``attention_linear.py``, the RoPE variant, see docs/hybridformer.md). Per head, with ``φ`` the kernel feature map and
``R_t`` the rotary rotation of position ``t`` (applied after ``φ`` to the first ``rope_dim`` channels):

    q̃_t = R_t φ(q_t),   k̃_s = R_s φ(k_s)
    o_t = q̃_tᵀ (Σ_s k̃_s v_sᵀ) / max(q̃_tᵀ Σ_s k̃_s, eps)

which equals the "left product" ``Σ_s (q̃_t·k̃_s) v_s / max(Σ_s q̃_t·k̃_s, eps)`` but never forms a T x T matrix. We
always use the right product (the authors train with the left one; the two are algebraically identical).

Our changes to the authors' code: padded frames are excluded (``φ(k)`` and ``v`` are zeroed there, so a sequence gives
the same output alone and in a padded batch); ``denominator="unrotated"`` offers RoFormer §3.3's variant, where the
denominator uses ``φ(q)·Σ φ(k)`` without rotation and therefore stays non-negative.
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
        q = _feature_map(self.feature_map, self._heads(self.linear_q(query)))
        k = _feature_map(self.feature_map, self._heads(self.linear_k(key)))
        v = self._heads(self.linear_v(value))
        if mask is not None:
            if mask.numel() != key.size(0) * key.size(1):
                raise ValueError(
                    f"LinearAttention: mask must be (B, 1, T) or (B, T) with B, T = {tuple(key.shape[:2])}, "
                    f"got {tuple(mask.shape)}"
                )
            valid = mask.reshape(mask.size(0), 1, -1, 1).to(k.dtype)  # (B, 1, T, 1)
            k = k * valid
            v = v * valid
        q_rotated = self.rotary(q) if self.rotary is not None else q
        k_rotated = self.rotary(k) if self.rotary is not None else k
        context = torch.matmul(k_rotated.transpose(-2, -1), v)  # (B, H, d_k, d_k) = Σ_s k̃_s v_sᵀ
        if self.denominator == "rotated":
            normaliser = torch.matmul(q_rotated, k_rotated.sum(dim=-2, keepdim=True).transpose(-2, -1))
        else:
            normaliser = torch.matmul(q, k.sum(dim=-2, keepdim=True).transpose(-2, -1))
        out = torch.matmul(q_rotated, context) / normaliser.clamp_min(self.eps)  # (B, H, T, d_k)
        return self.linear_out(out.transpose(1, 2).flatten(-2))
