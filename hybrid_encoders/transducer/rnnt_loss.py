"""The full RNN-T loss (Graves 2012, arXiv:1211.3711) through torchaudio's C++/CUDA kernel, checked first.

``torchaudio.functional.rnnt_loss`` is fast but fails on bad input with a bare "input length mismatch" from C++, or
silently returns garbage for labels that contain the blank id. Every check here runs before the kernel and raises a
``ValueError`` that names the offending argument. The same checks guard the pruned loss
(:mod:`hybrid_encoders.transducer.pruned_rnnt`).
"""

import torch
import torchaudio.functional

from hybrid_encoders.layers.masking import make_pad_mask

REDUCTIONS = ("mean", "sum", "none")


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise a ValueError when ``tensor`` holds NaN or Inf.

    One reduction decides the common (finite) case without a bool copy of a possibly huge ``(B, T, U+1, V)`` tensor;
    only a non-finite sum, which may also be an overflow, pays for the element-wise check.
    """
    if tensor.numel() == 0 or torch.isfinite(tensor.sum()):
        return
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or Inf")


def check_rnnt_targets(
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
    frame_lengths: torch.Tensor,
    num_frames: int,
    vocab_size: int,
    blank: int,
) -> None:
    """Validate the label side of an RNN-T loss.

    Args:
        targets: (B, U) integer labels, padded after ``target_lengths[b]`` with anything.
        target_lengths: (B,) integer, with ``max(target_lengths) == U``.
        frame_lengths: (B,) integer encoder lengths, ``1 <= frame_lengths[b] <= num_frames`` and
            ``max(frame_lengths) == num_frames``.
        num_frames: T, the padded time size of the encoder side.
        vocab_size: V; valid labels lie in ``[0, V)`` and differ from ``blank``.
        blank: the blank id.

    Raises:
        ValueError: naming the argument that is wrong.
    """
    if not 0 <= blank < vocab_size:
        raise ValueError(f"blank={blank} must lie in [0, vocab_size={vocab_size})")
    if targets.dim() != 2 or targets.is_floating_point():
        raise ValueError(f"targets must be a (batch, max_label_length) integer tensor, got {targets.dtype} {tuple(targets.shape)}")
    batch = targets.size(0)
    for name, lengths in (("target_lengths", target_lengths), ("frame_lengths", frame_lengths)):
        if lengths.dim() != 1 or lengths.size(0) != batch or lengths.is_floating_point():
            raise ValueError(f"{name} must be a ({batch},) integer tensor to match targets, got {lengths.dtype} {tuple(lengths.shape)}")
    if batch == 0:
        raise ValueError("the batch is empty")
    if int(frame_lengths.min()) < 1 or int(frame_lengths.max()) != num_frames:
        raise ValueError(
            f"frame_lengths must lie in [1, {num_frames}] with maximum {num_frames} (the padded number of frames), "
            f"got {frame_lengths.tolist()}"
        )
    if int(target_lengths.min()) < 0 or int(target_lengths.max()) != targets.size(1):
        raise ValueError(
            f"target_lengths must lie in [0, {targets.size(1)}] with maximum {targets.size(1)} (the padded label "
            f"length of targets), got {target_lengths.tolist()}"
        )
    valid = targets[~make_pad_mask(target_lengths, targets.size(1))]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= vocab_size):
        raise ValueError(f"targets must lie in [0, {vocab_size}) within target_lengths, got values in [{int(valid.min())}, {int(valid.max())}]")
    if bool((valid == blank).any()):
        raise ValueError(f"targets contain the blank id {blank} within target_lengths; labels must never be blank")


def padded_with_blank(targets: torch.Tensor, target_lengths: torch.Tensor, blank: int) -> torch.Tensor:
    """(B, U) int64 labels with every position past ``target_lengths`` set to ``blank`` (ESPnet pads with -1)."""
    return targets.to(torch.int64).masked_fill(make_pad_mask(target_lengths, targets.size(1)), blank)


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    frame_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
) -> torch.Tensor:
    """The RNN-T negative log-likelihood of ``targets`` under the joint network's ``logits``.

    Args:
        logits: (B, T, U+1, V) unnormalised joint-network outputs; the log-softmax is fused into the kernel.
        targets: (B, U) labels (any integer dtype), padded after ``target_lengths``.
        frame_lengths: (B,) encoder lengths, ``max == T``.
        target_lengths: (B,) label lengths, ``max == U``.
        blank: the blank id.
        reduction: ``mean`` (over the batch, as ESPnet's warp-transducer criterion), ``sum`` or ``none`` (B,).

    Returns:
        A scalar, or (B,) with ``reduction="none"``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    if logits.dim() != 4 or not logits.is_floating_point():
        raise ValueError(f"logits must be a (batch, frames, labels + 1, vocab) float tensor, got {logits.dtype} {tuple(logits.shape)}")
    if targets.dim() != 2 or targets.size(0) != logits.size(0) or targets.size(1) + 1 != logits.size(2):
        raise ValueError(
            f"targets must be (batch={logits.size(0)}, labels={logits.size(2) - 1}) to match logits "
            f"{tuple(logits.shape)}, got {tuple(targets.shape)}"
        )
    check_rnnt_targets(targets, target_lengths, frame_lengths, logits.size(1), logits.size(3), blank)
    check_finite(logits, "logits")
    return torchaudio.functional.rnnt_loss(
        logits,
        padded_with_blank(targets, target_lengths, blank).to(torch.int32),
        frame_lengths.to(torch.int32),
        target_lengths.to(torch.int32),
        blank=blank,
        reduction=reduction,
    )


class RNNTLoss(torch.nn.Module):
    """``criterion_transducer`` for ESPnet's model: ``loss = criterion(joint_out, target, t_len, u_len)``.

    Takes the place of warp-transducer's ``RNNTLoss(blank, fastemit_lambda=0.0)`` with the same batch-mean reduction.

    Args:
        blank: the blank id.
        reduction: ``mean``, ``sum`` or ``none``.
    """

    def __init__(self, blank: int = 0, reduction: str = "mean"):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
        self.blank = blank
        self.reduction = reduction

    def forward(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        frame_lengths: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> torch.Tensor:
        """See :func:`rnnt_loss` for the shapes."""
        return rnnt_loss(logits, targets, frame_lengths, target_lengths, self.blank, self.reduction)
