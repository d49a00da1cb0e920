"""Squeezeformer's feed-forward module (paper Sec. 3.3; TF ``FFModule``): Linear d -> 4d, Swish, dropout, Linear."""

import torch
from torch import nn


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
        self.dropout = nn.Dropout(dropout_rate)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Paper (TF) initialisation: U(-a, a) with a = d^-1/2 for w_1 and (hidden)^-1/2 for w_2, biases too."""
        for layer in (self.w_1, self.w_2):
            bound = layer.in_features**-0.5
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.uniform_(layer.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d_model) -> (B, T, d_model)."""
        return self.w_2(self.dropout(nn.functional.silu(self.w_1(x))))
