"""Squeezeformer's feed-forward module (paper Sec. 3.3; TF ``FFModule``): Linear d -> 4d, Swish, dropout, Linear.

While training, Swish -> dropout -> Linear runs through
:func:`~hybrid_encoders.layers.lean_autograd.activation_dropout_linear`: the backward pass keeps the 4d-wide
pre-activation and a bool dropout mask instead of the pre-activation, a float mask and the dropped activation
(5 instead of 12 bytes per hidden unit and frame), with the same gradients.
"""

import torch
from torch import nn

from hybrid_encoders.layers.lean_autograd import SILU, activation_dropout_linear, dropout_mask


class FeedForward(nn.Module):
    """``w_2(dropout(swish(w_1 x)))``. The block adds its own output dropout and residual.

    Args:
        d_model: input and output dimension d.
        hidden_units: inner dimension (4 d in every paper configuration).
        dropout_rate: dropout after the Swish.
    """

    def __init__(self, d_model: int, hidden_units: int, dropout_rate: float = 0.0):
        super().__init__()
        self.w_1 = nn.Linear(d_model, hidden_units)
        self.w_2 = nn.Linear(hidden_units, d_model)
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"FeedForward: dropout_rate must lie in [0, 1), got {dropout_rate}")
        self.dropout_rate = dropout_rate
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Paper (TF) initialisation: U(-a, a) with a = d^-1/2 for w_1 and (hidden)^-1/2 for w_2, biases too."""
        for layer in (self.w_1, self.w_2):
            bound = layer.in_features**-0.5
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.uniform_(layer.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d_model) -> (B, T, d_model)."""
        hidden = self.w_1(x)
        if not self.training:
            return self.w_2(nn.functional.silu(hidden))
        p = self.dropout_rate
        keep = dropout_mask(hidden, p) if p > 0.0 else None
        return activation_dropout_linear(hidden, SILU, self.w_2.weight, self.w_2.bias, keep, 1.0 / (1.0 - p))
