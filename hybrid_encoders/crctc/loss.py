"""The consistency-regularisation loss of CR-CTC (Yao et al., ICLR 2025, Sec. 3.2).

For the two views a and b of an utterance, with CTC frame posteriors p_a[t] and p_b[t] (t over the encoder frames),

    L_CR = 1/2 * sum_t ( KL(sg(p_b[t]) || p_a[t]) + KL(sg(p_a[t]) || p_b[t]) ),

where sg is the stop-gradient: each view is pulled towards the other view's distribution, which is held fixed, so
no gradient flows into the target side (icefall ``model.py``: ``kl_div`` against the detached, exchanged halves).
Padded frames do not count. The loss is summed per utterance and averaged over the utterances of the batch, the
normalisation of ESPnet's CTC loss, so that ``cr_loss_scale`` weighs it against the CTC loss as icefall's
``--cr-loss-scale`` does (icefall: ``reduction="sum"`` over both views, times 0.5, like its CTC loss).
"""

import torch

from hybrid_encoders.layers.masking import make_pad_mask


def consistency_loss(log_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Symmetric, stop-gradient KL divergence between the CTC posteriors of two views.

    Args:
        log_probs: (2B, T, V) CTC log-posteriors; rows b and B + b are the two views of utterance b.
        lengths: (2B,) valid frames of each row; the two views of an utterance have the same length.

    Returns:
        Scalar loss (float32, or float64 for float64 input): ``sum over rows r, valid frames t, tokens v of
        q[r', t, v] * (log q[r', t, v] - log_probs[r, t, v]) / (2B)``, with r' the other view of r and q the detached
        posteriors, i.e. the L_CR above averaged over the B utterances. Gradients reach ``log_probs`` only through its
        first argument position (the view being regularised), never through the target q.

    Raises:
        ValueError: ``log_probs`` is not 3-D with an even batch, ``lengths`` does not match it, or the two views of
            an utterance have different lengths.
    """
    if log_probs.dim() != 3 or log_probs.size(0) % 2 != 0:
        raise ValueError(
            f"consistency_loss: log_probs must be (2B, T, V) with the two views stacked on the batch axis, got shape "
            f"{tuple(log_probs.shape)}"
        )
    rows, frames, _ = log_probs.shape
    if lengths.shape != (rows,):
        raise ValueError(f"consistency_loss: lengths must have shape ({rows},), got {tuple(lengths.shape)}")
    half = rows // 2
    if not torch.equal(lengths[:half], lengths[half:]):
        raise ValueError(
            f"consistency_loss: the two views of an utterance must have the same length, got {lengths[:half].tolist()} "
            f"and {lengths[half:].tolist()}"
        )
    valid = ~make_pad_mask(lengths, frames)  # (2B, T)
    log_probs = log_probs.to(torch.promote_types(log_probs.dtype, torch.float32))
    own = log_probs[valid]  # (N, V): N valid frames of both views
    other = log_probs.detach().roll(half, dims=0)[valid]  # (N, V): the other view's frames, held fixed
    return (other.exp() * (other - own)).sum() / rows
