"""Zipformer feed-forward module (spec §5.5): Linear -> SwooshL -> dropout (shared over time) -> Linear."""

from torch import nn

from hybrid_encoders.layers.swoosh import SwooshLinear
from hybrid_encoders.regularization.balancer import Balancer
from hybrid_encoders.regularization.scheduled_float import FloatLike, whitening_schedule
from hybrid_encoders.regularization.whiten import Whiten


class ZipformerFeedForward(nn.Module):
    """Feed-forward block of a Zipformer layer (icefall FeedforwardModule).

    Args:
        embed_dim: channels C.
        feedforward_dim: hidden width F'.
        dropout: dropout after the activation, one mask per sequence shared over time (training only).

    Shapes: (B, T, C) -> (B, T, C). Parameters ``in_proj`` (F', C), ``out_proj.weight`` (C, F').
    """

    def __init__(self, embed_dim: int, feedforward_dim: int, dropout: FloatLike = 0.0):
        super().__init__()
        self.in_proj = nn.Linear(embed_dim, feedforward_dim)
        self.hidden_balancer = Balancer(
            feedforward_dim, channel_dim=-1, min_positive=0.3, max_positive=1.0, min_abs=0.75, max_abs=5.0
        )
        self.out_proj = SwooshLinear(
            feedforward_dim, embed_dim, "swoosh_l", dropout=dropout, dropout_shared_dim=1, initial_scale=0.1
        )
        self.out_whiten = Whiten(1, whitening_schedule(7.5), prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x):
        return self.out_whiten(self.out_proj(self.hidden_balancer(self.in_proj(x))))
