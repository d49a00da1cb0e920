"""Pruned RNN-T loss (Kuang et al., "Pruned RNN-T for fast, memory-efficient ASR training", arXiv:2206.13236).

The full RNN-T loss evaluates the joint network on every node of the (frame, label) lattice: a (B, T, U+1, V)
tensor. The pruned loss avoids it in three steps:

1. :func:`simple_rnnt_loss`: the RNN-T loss of a *trivial joiner*, ``logits = am[t] + lm[s]`` (linear projections of
   the encoder and decoder outputs to the vocabulary), whose per-node normaliser is one batched matrix product, so
   nothing of size (B, T, S+1, V) exists. It is smoothed with an "LM only" and an "AM only" (unigram-LM) term.
2. :func:`prune_ranges`: the occupation probabilities of that lattice (the gradients of its log-likelihood w.r.t.
   the transition scores) pick, for every frame, a window of ``prune_range`` consecutive label positions that holds
   most of the probability mass.
3. :func:`prune_joint_inputs` and :func:`pruned_rnnt_loss`: the real (non-linear) joint network evaluated only on
   those windows, (B, T, R, V), and the exact RNN-T recursion over the pruned lattice.

Lattice notation (k2's layout, so k2 can be swapped in): B batch, T frames, S labels (without blank), V vocabulary,
node (s, t) = "s labels emitted, t frames consumed", 0 <= s <= S_b, 0 <= t <= T_b.

* ``px`` (B, S, T+1): log-probability of (s, t) -> (s+1, t), emitting label ``symbols[:, s]`` on frame t;
* ``py`` (B, S+1, T): log-probability of (s, t) -> (s, t+1), emitting blank on frame t;
* the log-likelihood is the forward score of the final node (S_b, T_b):
  ``p[s, t] = logaddexp(p[s-1, t] + px[s-1, t], p[s, t-1] + py[s, t-1])``, ``p[0, 0] = 0`` (Graves 2012, the
  forward variable of RNN-T with ``alpha(t, u) = p[u, t]``, and the final blank as the last step).

When ``import k2`` works, the simple loss, the pruning bounds and the pruned loss use k2's kernels instead; the pure
PyTorch code below is what runs otherwise (k2 has no wheel for current PyTorch). The one intended difference: our
unigram LM of the AM-only term averages over valid label positions only, k2's also over padding.
"""

from typing import Optional, Tuple, Union

import torch

from hybrid_encoders.layers.masking import make_pad_mask
from hybrid_encoders.transducer.rnnt_loss import REDUCTIONS, check_finite, check_rnnt_targets, padded_with_blank

try:
    import k2
except (ImportError, OSError):  # OSError: a k2 wheel built against another torch fails to load its library
    k2 = None

NEG_INF = float("-inf")


def _skew(x: torch.Tensor, width: int) -> torch.Tensor:
    """(B, R, C) -> (width, B, R) with ``out[d, :, r] = x[:, r, d - r]``; -inf where ``d - r`` is outside [0, C).

    Puts every anti-diagonal ``d = s + t`` of the lattice into one row, so the recursion becomes a loop over rows.
    """
    batch, rows, columns = x.shape
    t = torch.arange(width, device=x.device).unsqueeze(0) - torch.arange(rows, device=x.device).unsqueeze(1)
    inside = (t >= 0) & (t < columns)
    skewed = torch.gather(x, 2, t.clamp(0, max(columns - 1, 0)).expand(batch, rows, width))
    return skewed.masked_fill(~inside, NEG_INF).permute(2, 0, 1).contiguous()


def _unskew(y: torch.Tensor, columns: int) -> torch.Tensor:
    """Inverse of :func:`_skew`: (width, B, R) -> (B, R, columns) with ``out[:, r, t] = y[t + r, :, r]``."""
    width, batch, rows = y.shape
    d = torch.arange(columns, device=y.device).unsqueeze(0) + torch.arange(rows, device=y.device).unsqueeze(1)
    return torch.gather(y.permute(1, 2, 0), 2, d.expand(batch, rows, columns))


def _transition_masks(symbol_lengths, frame_lengths, num_symbols, num_frames):
    """Valid transitions: px (B, S, T+1) needs s < S_b, t <= T_b; py (B, S+1, T) needs s <= S_b, t < T_b."""
    px_valid = ~make_pad_mask(symbol_lengths, num_symbols).unsqueeze(2) & ~make_pad_mask(
        frame_lengths + 1, num_frames + 1
    ).unsqueeze(1)
    py_valid = ~make_pad_mask(symbol_lengths + 1, num_symbols + 1).unsqueeze(2) & ~make_pad_mask(
        frame_lengths, num_frames
    ).unsqueeze(1)
    return px_valid, py_valid


def _forward_scores(pxs: torch.Tensor, pys: torch.Tensor) -> torch.Tensor:
    """Forward scores along anti-diagonals. pxs (D, B, S), pys (D, B, S+1) -> alpha (D, B, S+1), D = S + T + 1."""
    width, batch, nodes = pys.shape
    alpha = pys.new_full((width, batch, nodes), NEG_INF)
    alpha[0, :, 0] = 0.0
    no_path = pys.new_full((batch, 1), NEG_INF)
    for d in range(1, width):
        previous = alpha[d - 1]
        via_blank = previous + pys[d - 1]
        via_label = torch.cat((no_path, previous[:, :-1] + pxs[d - 1]), dim=1)
        alpha[d] = torch.logaddexp(via_label, via_blank)
    return alpha


def _backward_scores(pxs, pys, symbol_lengths, frame_lengths) -> torch.Tensor:
    """Backward scores (log-probability of reaching (S_b, T_b) from each node), same layout as the forward ones."""
    width, batch, nodes = pys.shape
    final = torch.zeros(width, batch, nodes, dtype=torch.bool, device=pys.device)
    final[symbol_lengths + frame_lengths, torch.arange(batch, device=pys.device), symbol_lengths] = True
    beta = pys.new_full((width, batch, nodes), NEG_INF)
    beta[width - 1].masked_fill_(final[width - 1], 0.0)
    no_path = pys.new_full((batch, 1), NEG_INF)
    for d in range(width - 2, -1, -1):
        following = beta[d + 1]
        via_blank = pys[d] + following
        via_label = torch.cat((pxs[d] + following[:, 1:], no_path), dim=1)
        beta[d] = torch.logaddexp(via_label, via_blank).masked_fill_(final[d], 0.0)
    return beta


def _occupation(pxs, pys, alpha, beta, total, num_frames) -> Tuple[torch.Tensor, torch.Tensor]:
    """Posterior probability of every transition, i.e. d total / d px and d total / d py.

    Returns px_occupation (B, S, T+1) and py_occupation (B, S+1, T); zero for a sequence with no complete path.
    """
    width, batch, nodes = alpha.shape
    after = torch.cat((beta[1:], beta.new_full((1, batch, nodes), NEG_INF)), dim=0)  # beta of node d + 1
    reachable = torch.where(torch.isfinite(total), total, torch.zeros_like(total)).view(1, batch, 1)
    px_occupation = torch.exp(alpha[:, :, :-1] + pxs + after[:, :, 1:] - reachable)
    py_occupation = torch.exp(alpha + pys + after - reachable)
    return _unskew(px_occupation, num_frames + 1), _unskew(py_occupation, num_frames)


class _MutualInformation(torch.autograd.Function):
    """Lattice log-likelihood with a hand-written backward (a second anti-diagonal sweep), see the module docs."""

    @staticmethod
    def forward(ctx, px, py, symbol_lengths, frame_lengths, return_occupation):
        batch, num_symbols, _ = px.shape
        num_frames = py.size(2)
        width = num_symbols + num_frames + 1
        px_valid, py_valid = _transition_masks(symbol_lengths, frame_lengths, num_symbols, num_frames)
        pxs = _skew(px.detach().masked_fill(~px_valid, NEG_INF), width)
        pys = _skew(py.detach().masked_fill(~py_valid, NEG_INF), width)
        alpha = _forward_scores(pxs, pys)
        total = alpha[symbol_lengths + frame_lengths, torch.arange(batch, device=px.device), symbol_lengths]
        ctx.num_frames = num_frames
        if not return_occupation:
            ctx.save_for_backward(pxs, pys, alpha, total, symbol_lengths, frame_lengths)
            ctx.occupation_saved = False
            return total
        beta = _backward_scores(pxs, pys, symbol_lengths, frame_lengths)
        px_occupation, py_occupation = _occupation(pxs, pys, alpha, beta, total, num_frames)
        ctx.save_for_backward(px_occupation, py_occupation)
        ctx.occupation_saved = True
        ctx.mark_non_differentiable(px_occupation, py_occupation)
        return total, px_occupation, py_occupation

    @staticmethod
    def backward(ctx, grad_total, *unused_occupation_grads):
        if ctx.occupation_saved:
            px_occupation, py_occupation = ctx.saved_tensors
        else:
            pxs, pys, alpha, total, symbol_lengths, frame_lengths = ctx.saved_tensors
            beta = _backward_scores(pxs, pys, symbol_lengths, frame_lengths)
            px_occupation, py_occupation = _occupation(pxs, pys, alpha, beta, total, ctx.num_frames)
        scale = grad_total.view(-1, 1, 1)
        return px_occupation * scale, py_occupation * scale, None, None, None


def mutual_information_recursion(
    px: torch.Tensor,
    py: torch.Tensor,
    symbol_lengths: torch.Tensor,
    frame_lengths: torch.Tensor,
    return_occupation: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]]:
    """Log-likelihood of the lattice's final node (S_b, T_b), vectorised along anti-diagonals.

    The loop runs over the S + T + 1 anti-diagonals; each step updates a whole diagonal of every sequence at once.
    The backward pass is a second sweep for the backward scores; the gradients are transition posteriors.

    Args:
        px: (B, S, T+1) label-transition log-probabilities (see the module docs).
        py: (B, S+1, T) blank-transition log-probabilities.
        symbol_lengths: (B,) int64, S_b <= S.
        frame_lengths: (B,) int64, T_b <= T.
        return_occupation: also return the transition posteriors (the gradients of the total w.r.t. px and py)
            without a backward pass; they give the pruning bounds.

    Returns:
        (B,) log-likelihoods, or ``(totals, (px_occupation (B, S, T+1), py_occupation (B, S+1, T)))``.
        Transitions outside a sequence's lattice are ignored (treated as -inf, zero gradient).
    """
    if px.dim() != 3 or py.dim() != 3:
        raise ValueError(f"px and py must be 3-D, got {tuple(px.shape)} and {tuple(py.shape)}")
    batch, num_symbols, frames_plus_one = px.shape
    if tuple(py.shape) != (batch, num_symbols + 1, frames_plus_one - 1) or frames_plus_one < 2:
        raise ValueError(
            f"px (B, S, T+1) and py (B, S+1, T) do not match with T >= 1: got {tuple(px.shape)} and {tuple(py.shape)}"
        )
    symbol_lengths = symbol_lengths.to(device=px.device, dtype=torch.int64)
    frame_lengths = frame_lengths.to(device=px.device, dtype=torch.int64)
    if tuple(symbol_lengths.shape) != (batch,) or int(symbol_lengths.min()) < 0 or int(symbol_lengths.max()) > num_symbols:
        raise ValueError(f"symbol_lengths must be ({batch},) in [0, {num_symbols}], got {symbol_lengths.tolist()}")
    if tuple(frame_lengths.shape) != (batch,) or int(frame_lengths.min()) < 0 or int(frame_lengths.max()) > frames_plus_one - 1:
        raise ValueError(f"frame_lengths must be ({batch},) in [0, {frames_plus_one - 1}], got {frame_lengths.tolist()}")
    result = _MutualInformation.apply(px, py, symbol_lengths, frame_lengths, return_occupation)
    if return_occupation:
        total, px_occupation, py_occupation = result
        return total, (px_occupation, py_occupation)
    return result


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _close_last_frame(px: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """(B, S, T) label log-probs -> (B, S, T+1) with -inf on every t >= T_b.

    No label can be emitted past the last frame: a path must end with the blank on frame T_b - 1 (Graves 2012).
    """
    batch, num_symbols, num_frames = px.shape
    closed = torch.cat((px, px.new_full((batch, num_symbols, 1), NEG_INF)), dim=2)
    return closed.masked_fill(make_pad_mask(frame_lengths, num_frames + 1).unsqueeze(1), NEG_INF)


def _boundary(symbol_lengths: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """k2's (B, 4) ``[begin_symbol, begin_frame, end_symbol, end_frame]``."""
    zeros = torch.zeros_like(symbol_lengths)
    return torch.stack((zeros, zeros, symbol_lengths, frame_lengths), dim=1).to(torch.int64)


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")


def check_smoothing_scales(lm_scale: float, am_scale: float, prefix: str = "") -> None:
    """The simple loss's smoothing weights must be >= 0 with a sum <= 1; ``prefix`` names where they were set."""
    if not (lm_scale >= 0.0 and am_scale >= 0.0 and lm_scale + am_scale <= 1.0):
        raise ValueError(f"{prefix}lm_scale and am_scale must be >= 0 with a sum <= 1, got {lm_scale} and {am_scale}")


def smoothed_rnnt_logprobs(
    lm: torch.Tensor,
    am: torch.Tensor,
    symbols: torch.Tensor,
    symbol_lengths: torch.Tensor,
    frame_lengths: torch.Tensor,
    blank: int,
    lm_scale: float,
    am_scale: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Transition log-probs of the smoothed trivial joiner.

    With ``log p(v | s, t) = log_softmax(lm[s] + am[t])[v]`` (joint), ``log_softmax(lm[s])[v]`` (LM only) and
    ``log(softmax(am[t]) * u / sum(softmax(am[t]) * u))[v]`` with ``u`` the unigram LM (the decoder's output
    distribution averaged over all valid label positions of the batch; AM only), every transition scores
    ``(1 - lm_scale - am_scale) * joint + lm_scale * lm_only + am_scale * am_only``.

    Args:
        lm: (B, S+1, V) decoder-side logits (``lm[:, s]`` follows the first s labels).
        am: (B, T, V) encoder-side logits.
        symbols: (B, S) labels; symbol_lengths (B,), frame_lengths (B,).
        blank: the blank id.
        lm_scale, am_scale: the smoothing weights.

    Returns:
        px (B, S, T+1), py (B, S+1, T).
    """
    batch, num_symbols = symbols.shape
    lm_max = lm.detach().amax(dim=2, keepdim=True)  # the maxima cancel exactly, so they need no gradient
    am_max = am.detach().amax(dim=2, keepdim=True)
    lm_probs = torch.exp(lm - lm_max)  # (B, S+1, V)
    am_probs = torch.exp(am - am_max)  # (B, T, V)
    tiny = torch.finfo(lm.dtype).tiny
    # log sum_v exp(lm[s, v] + am[t, v]) for all (s, t) as one matmul, never materialising (B, S+1, T, V).
    joint_norm = torch.log(torch.matmul(lm_probs, am_probs.transpose(1, 2)) + tiny) + lm_max + am_max.transpose(1, 2)
    lm_norm = torch.logsumexp(lm, dim=2, keepdim=True)  # (B, S+1, 1)
    valid_positions = (~make_pad_mask(symbol_lengths + 1, num_symbols + 1)).to(lm.dtype).unsqueeze(2)
    lm_softmax = lm_probs / lm_probs.sum(dim=2, keepdim=True)
    unigram = (lm_softmax * valid_positions).sum(dim=(0, 1)) / valid_positions.sum() + tiny  # (V,)
    log_unigram = torch.log(unigram)
    am_norm = (torch.log(torch.matmul(am_probs, unigram)) + am_max.squeeze(2)).unsqueeze(1)  # (B, 1, T)

    am_symbols = torch.gather(am.transpose(1, 2), 1, symbols.unsqueeze(2).expand(-1, -1, am.size(1)))  # (B, S, T)
    lm_symbols = torch.gather(lm[:, :num_symbols], 2, symbols.unsqueeze(2))  # (B, S, 1)
    joint_scale = 1.0 - lm_scale - am_scale
    px = (
        joint_scale * (am_symbols + lm_symbols - joint_norm[:, :num_symbols])
        + lm_scale * (lm_symbols - lm_norm[:, :num_symbols])
        + am_scale * (am_symbols + log_unigram[symbols].unsqueeze(2) - am_norm)
    )
    am_blank = am[:, :, blank].unsqueeze(1)  # (B, 1, T)
    lm_blank = lm[:, :, blank].unsqueeze(2)  # (B, S+1, 1)
    py = (
        joint_scale * (am_blank + lm_blank - joint_norm)
        + lm_scale * (lm_blank - lm_norm)
        + am_scale * (am_blank + log_unigram[blank] - am_norm)
    )
    return _close_last_frame(px, frame_lengths), py


def simple_rnnt_loss(
    lm: torch.Tensor,
    am: torch.Tensor,
    symbols: torch.Tensor,
    symbol_lengths: torch.Tensor,
    frame_lengths: torch.Tensor,
    blank: int = 0,
    lm_scale: float = 0.25,
    am_scale: float = 0.0,
    reduction: str = "mean",
    return_occupation: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]]:
    """The smoothed RNN-T loss of the trivial joiner ``lm[s] + am[t]`` (step 1 of the module docs).

    Args:
        lm: (B, S+1, V) decoder outputs projected to the vocabulary (position 0 follows only the blank/start).
        am: (B, T, V) encoder outputs projected to the vocabulary.
        symbols: (B, S) labels, padded after ``symbol_lengths``; never the blank.
        symbol_lengths: (B,), max == S.
        frame_lengths: (B,), 1 <= T_b, max == T.
        blank: the blank id.
        lm_scale, am_scale: smoothing weights, >= 0 with ``lm_scale + am_scale <= 1`` (icefall: 0.25 and 0.0).
        reduction: ``mean`` (over the batch), ``sum`` or ``none``.
        return_occupation: also return the transition posteriors ``(px (B, S, T+1), py (B, S+1, T))`` for
            :func:`prune_ranges`.
    """
    _check_reduction(reduction)
    if lm.dim() != 3 or am.dim() != 3 or lm.size(0) != am.size(0) or lm.size(2) != am.size(2):
        raise ValueError(f"lm (B, S+1, V) and am (B, T, V) do not match: {tuple(lm.shape)} and {tuple(am.shape)}")
    if symbols.dim() != 2 or symbols.size(0) != lm.size(0) or symbols.size(1) + 1 != lm.size(1):
        raise ValueError(f"symbols must be (B={lm.size(0)}, S={lm.size(1) - 1}) to match lm, got {tuple(symbols.shape)}")
    check_smoothing_scales(lm_scale, am_scale)
    check_rnnt_targets(symbols, symbol_lengths, frame_lengths, am.size(1), am.size(2), blank)
    check_finite(lm, "lm (the decoder-side simple-loss logits)")
    check_finite(am, "am (the encoder-side simple-loss logits)")
    symbols = padded_with_blank(symbols, symbol_lengths, blank)
    if k2 is not None:
        return k2.rnnt_loss_smoothed(
            lm=lm,
            am=am,
            symbols=symbols,
            termination_symbol=blank,
            lm_only_scale=lm_scale,
            am_only_scale=am_scale,
            boundary=_boundary(symbol_lengths, frame_lengths),
            reduction=reduction,
            return_grad=return_occupation,
        )
    px, py = smoothed_rnnt_logprobs(lm, am, symbols, symbol_lengths, frame_lengths, blank, lm_scale, am_scale)
    result = mutual_information_recursion(px, py, symbol_lengths, frame_lengths, return_occupation)
    if return_occupation:
        total, occupation = result
        return _reduce(-total, reduction), occupation
    return _reduce(-result, reduction)


def _reverse_cummin(x: torch.Tensor) -> torch.Tensor:
    """``out[:, t] = min(x[:, t:])`` along dim 1."""
    return torch.flip(torch.cummin(torch.flip(x, dims=[1]), dim=1).values, dims=[1])


def prune_ranges(
    px_occupation: torch.Tensor,
    py_occupation: torch.Tensor,
    symbol_lengths: torch.Tensor,
    frame_lengths: torch.Tensor,
    prune_range: int,
) -> torch.Tensor:
    """Per-frame windows of label positions that keep most of the simple lattice's probability mass.

    For each frame t the window ``[s_begin[t], s_begin[t] + R)`` maximises the summed occupation of its nodes; the
    last frame's window ends at S_b. ``s_begin`` is then made non-decreasing, 0 on frame 0, and advances by at most
    R - 1 per frame, so consecutive windows overlap and a complete path always survives (when (R-1) * T_b >= S_b).

    Args:
        px_occupation: (B, S, T+1) and py_occupation: (B, S+1, T) from :func:`simple_rnnt_loss`.
        symbol_lengths: (B,); frame_lengths: (B,).
        prune_range: R, labels kept per frame; >= 2 (one label per window could never advance). Windows are capped
            at S + 1, which covers the whole lattice.

    Returns:
        (B, T, min(R, S+1)) int64 label positions in [0, S].
    """
    if prune_range < 2:
        raise ValueError(
            f"prune_range must be >= 2 (a window of one label position per frame can never move on to the next label), "
            f"got {prune_range}"
        )
    batch, num_symbols, _ = px_occupation.shape
    num_frames = py_occupation.size(2)
    symbol_lengths = symbol_lengths.to(device=px_occupation.device, dtype=torch.int64)
    frame_lengths = frame_lengths.to(device=px_occupation.device, dtype=torch.int64)
    if k2 is not None:
        return k2.get_rnnt_prune_ranges(
            px_occupation, py_occupation, _boundary(symbol_lengths, frame_lengths), prune_range
        )
    window = min(prune_range, num_symbols + 1)
    node_occupation = py_occupation.clone()  # probability of leaving node (s, t), i.e. of visiting it
    node_occupation[:, :num_symbols] += px_occupation[:, :, :num_frames]
    window_mass = node_occupation.unfold(1, window, 1).sum(dim=3)  # (B, S + 2 - R, T)
    s_begin = window_mass.argmax(dim=1)  # (B, T)
    frames = torch.arange(num_frames, device=s_begin.device)
    last_window = (symbol_lengths - window + 1).clamp(min=0).unsqueeze(1)
    s_begin = torch.where(frames.unsqueeze(0) >= frame_lengths.unsqueeze(1) - 1, last_window, s_begin)
    s_begin = _reverse_cummin(s_begin)
    # x = (R-1) t - s_begin non-decreasing <=> s_begin advances by <= R-1 per frame; x >= 0 at t = 0 => s_begin = 0.
    slack = _reverse_cummin((window - 1) * frames - s_begin).clamp(min=0)
    s_begin = (window - 1) * frames - slack
    return s_begin.unsqueeze(2) + torch.arange(window, device=s_begin.device)


def prune_joint_inputs(am: torch.Tensor, lm: torch.Tensor, ranges: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Joint-network inputs on the pruned lattice only.

    Args:
        am: (B, T, J) projected encoder outputs.
        lm: (B, S+1, J) projected decoder outputs.
        ranges: (B, T, R) from :func:`prune_ranges`.

    Returns:
        am (B, T, R, J) (a broadcast view) and lm (B, T, R, J) with ``lm[b, t, r] = lm[b, ranges[b, t, r]]``.
    """
    batch, num_frames, window = ranges.shape
    dim = lm.size(2)
    am_pruned = am.unsqueeze(2).expand(batch, num_frames, window, am.size(2))
    positions = ranges.reshape(batch, num_frames * window, 1).expand(-1, -1, dim)
    lm_pruned = torch.gather(lm, 1, positions).view(batch, num_frames, window, dim)
    return am_pruned, lm_pruned


def pruned_rnnt_logprobs(
    logits: torch.Tensor,
    symbols: torch.Tensor,
    ranges: torch.Tensor,
    frame_lengths: torch.Tensor,
    blank: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Lattice transition log-probs from pruned joint outputs; -inf outside the windows.

    Args:
        logits: (B, T, R, V) joint outputs on the windows; symbols (B, S); ranges (B, T, R); frame_lengths (B,).

    Returns:
        px (B, S, T+1), py (B, S+1, T).
    """
    batch, num_frames, window, _ = logits.shape
    num_symbols = symbols.size(1)
    log_norm = torch.logsumexp(logits, dim=3)  # (B, T, R)
    # position S has no next label: give it the blank, its px entry is dropped below.
    next_label = torch.cat((symbols, symbols.new_full((batch, 1), blank)), dim=1)  # (B, S+1)
    window_labels = torch.gather(next_label, 1, ranges.reshape(batch, -1)).view(batch, num_frames, window)
    px_window = torch.gather(logits, 3, window_labels.unsqueeze(3)).squeeze(3) - log_norm
    py_window = logits[..., blank] - log_norm
    outside = logits.new_full((batch, num_frames, num_symbols + 1), NEG_INF)
    px = outside.scatter(2, ranges, px_window)[:, :, :num_symbols].transpose(1, 2)  # (B, S, T)
    py = outside.scatter(2, ranges, py_window).transpose(1, 2)  # (B, S+1, T)
    return _close_last_frame(px, frame_lengths), py


def pruned_rnnt_loss(
    logits: torch.Tensor,
    symbols: torch.Tensor,
    ranges: torch.Tensor,
    symbol_lengths: torch.Tensor,
    frame_lengths: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
) -> torch.Tensor:
    """The RNN-T loss restricted to the pruned lattice (step 3 of the module docs).

    With windows covering the whole lattice (``prune_range > S``) it equals the full RNN-T loss.

    Args:
        logits: (B, T, R, V) joint-network outputs on the windows (from :func:`prune_joint_inputs`).
        symbols: (B, S) labels, padded after ``symbol_lengths``; never the blank.
        ranges: (B, T, R) label positions of the windows, from :func:`prune_ranges`.
        symbol_lengths: (B,), max == S; frame_lengths: (B,), 1 <= T_b, max == T.
        blank: the blank id.
        reduction: ``mean`` (over the batch), ``sum`` or ``none`` (B,).
    """
    _check_reduction(reduction)
    if logits.dim() != 4 or not logits.is_floating_point():
        raise ValueError(f"logits must be a (B, T, R, V) float tensor, got {logits.dtype} {tuple(logits.shape)}")
    if tuple(ranges.shape) != tuple(logits.shape[:3]):
        raise ValueError(f"ranges must be (B, T, R) = {tuple(logits.shape[:3])} to match logits, got {tuple(ranges.shape)}")
    if symbols.dim() != 2 or symbols.size(0) != logits.size(0):
        raise ValueError(f"symbols must be (B={logits.size(0)}, S), got {tuple(symbols.shape)}")
    check_rnnt_targets(symbols, symbol_lengths, frame_lengths, logits.size(1), logits.size(3), blank)
    if int(ranges.min()) < 0 or int(ranges.max()) > symbols.size(1):
        raise ValueError(f"ranges must lie in [0, S={symbols.size(1)}], got [{int(ranges.min())}, {int(ranges.max())}]")
    check_finite(logits, "logits")
    symbols = padded_with_blank(symbols, symbol_lengths, blank)
    ranges = ranges.to(torch.int64)
    if k2 is not None:
        return k2.rnnt_loss_pruned(
            logits=logits,
            symbols=symbols,
            ranges=ranges,
            termination_symbol=blank,
            boundary=_boundary(symbol_lengths, frame_lengths),
            reduction=reduction,
        )
    px, py = pruned_rnnt_logprobs(logits, symbols, ranges, frame_lengths, blank)
    return _reduce(-mutual_information_recursion(px, py, symbol_lengths, frame_lengths), reduction)
