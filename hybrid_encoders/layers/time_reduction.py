"""Squeezeformer's Temporal U-Net (paper Sec. 3.1): halve the frame rate in the middle of the encoder and restore
it before the last block.

Reduction (TF ``TimeReductionLayer``, NeMo ``TimeReductionModule``): zero the padded frames, depthwise Conv1d
(kernel 5, stride 2, padding 3 on both sides as in NeMo) and pointwise Conv1d; no activation or norm. The output is
cut to ceil(T / 2) frames; a sequence of length L keeps ceil(L / 2) valid frames.

Recovery: repeat every reduced frame twice, cut to the pre-reduction length T, Linear d -> d, and add the activation
saved before the reduction (the U-Net skip connection).
"""

import torch
from torch import nn

STRIDE = 2  # the reduction factor; recovery repeats every frame this many times


def reduced_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """(B,) lengths before the reduction -> (B,) lengths after it: ceil(L / 2)."""
    return torch.div(lengths + STRIDE - 1, STRIDE, rounding_mode="floor")


class TimeReduction(nn.Module):
    """(B, T, d) -> (B, ceil(T / 2), d) by a strided depthwise-separable convolution.

    Args:
        d_model: channel dimension d.
        kernel_size: depthwise kernel size (5 in the paper).
    """

    def __init__(self, d_model: int, kernel_size: int = 5):
        super().__init__()
        self.dw_conv = nn.Conv1d(
            d_model, d_model, kernel_size, stride=STRIDE, padding=kernel_size - STRIDE, groups=d_model
        )
        self.pw_conv = nn.Conv1d(d_model, d_model, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Paper (TF) initialisation: U(-a, a) with a = kernel_size^-1/2 (depthwise) and d^-1/2 (pointwise)."""
        for layer, fan_in in ((self.dw_conv, self.dw_conv.kernel_size[0]), (self.pw_conv, self.pw_conv.in_channels)):
            bound = fan_in**-0.5
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.uniform_(layer.bias, -bound, bound)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Reduce.

        Args:
            x: (B, T, d).
            mask: (B, 1, T) bool, True at valid frames.

        Returns:
            (B, ceil(T / 2), d); the reduced mask is ``mask[:, :, ::2]``.
        """
        out_length = (x.size(1) + STRIDE - 1) // STRIDE
        x = x.masked_fill(~mask.transpose(1, 2), 0.0).transpose(1, 2)  # (B, d, T)
        x = self.pw_conv(self.dw_conv(x))
        return x[:, :, :out_length].transpose(1, 2)


class TimeRecovery(nn.Module):
    """Restore the frame rate: ``skip + Linear(repeat_interleave(x, 2)[:, :T])``.

    Args:
        d_model: channel dimension d.
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.linear = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras Dense default, as in the TF code: Glorot-uniform weight, zero bias."""
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Recover.

        Args:
            x: (B, T', d) reduced frames.
            skip: (B, T, d) the input of the reduction, T' = ceil(T / 2).

        Returns:
            (B, T, d).
        """
        upsampled = torch.repeat_interleave(x, STRIDE, dim=1)[:, : skip.size(1)]
        return skip + self.linear(upsampled)
