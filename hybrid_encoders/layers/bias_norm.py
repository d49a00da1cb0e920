"""BiasNorm (Zipformer paper §3.3): RMS normalisation around a learned bias, with a learned log-scale."""

import torch
from torch import nn

from hybrid_encoders.regularization.balancer import limit_param_value


class BiasNorm(nn.Module):
    """``BiasNorm(x) = x / RMS(x - b) * exp(gamma)``, over the last axis.

    The bias only enters the RMS (it is not subtracted from the output) and there is no epsilon, as in icefall.
    While training, ``log_scale`` (gamma) is kept in [-1.5, 1.5] through its gradient only.

    Args:
        num_channels: size C of the last axis.

    Shapes: (..., C) -> (..., C). Parameters: ``log_scale`` (0-dim), ``bias`` (C,).
    """

    def __init__(self, num_channels: int):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(1.0))
        self.bias = nn.Parameter(torch.empty(num_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """icefall's init: log_scale 1.0, bias ~ N(0, 1e-4^2)."""
        with torch.no_grad():
            self.log_scale.fill_(1.0)
            nn.init.normal_(self.bias, std=1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_scale = limit_param_value(self.log_scale, -1.5, 1.5, training=self.training)
        inverse_rms = torch.rsqrt(torch.mean(torch.square(x - self.bias), dim=-1, keepdim=True))
        return x * (inverse_rms * log_scale.exp())
