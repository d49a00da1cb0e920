"""Pruned RNN-T: the anti-diagonal recursion, the simple loss, the pruning bounds and the pruned loss."""

import math

import pytest
import torch

from hybrid_encoders.transducer import pruned_rnnt
from hybrid_encoders.transducer.pruned_rnnt import (
    mutual_information_recursion,
    prune_joint_inputs,
    prune_ranges,
    pruned_rnnt_loss,
    simple_rnnt_loss,
)
from hybrid_encoders.transducer.rnnt_loss import rnnt_loss

pytestmark = pytest.mark.skipif(pruned_rnnt.k2 is not None, reason="these tests cover the pure-PyTorch path")


def log_add(terms):
    terms = [x for x in terms if x != -math.inf]
    if not terms:
        return -math.inf
    top = max(terms)
    return top + math.log(sum(math.exp(x - top) for x in terms))


def slow_lattice_score(px, py, num_symbols: int, num_frames: int) -> float:
    """Node-by-node forward recursion over (s, t) with Python loops; px (S, T+1), py (S+1, T) of one sequence."""
    p = [[-math.inf] * (num_frames + 1) for _ in range(num_symbols + 1)]
    p[0][0] = 0.0
    for s in range(num_symbols + 1):
        for t in range(num_frames + 1):
            if s == 0 and t == 0:
                continue
            terms = []
            if s > 0:
                terms.append(p[s - 1][t] + float(px[s - 1, t]))
            if t > 0:
                terms.append(p[s][t - 1] + float(py[s, t - 1]))
            p[s][t] = log_add(terms)
    return p[num_symbols][num_frames]


def random_lattice(symbol_lengths, frame_lengths, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batch, num_symbols, num_frames = len(symbol_lengths), max(symbol_lengths), max(frame_lengths)
    px = torch.randn(batch, num_symbols, num_frames + 1, generator=generator, dtype=dtype)
    py = torch.randn(batch, num_symbols + 1, num_frames, generator=generator, dtype=dtype)
    return px, py, torch.tensor(symbol_lengths), torch.tensor(frame_lengths)


def test_recursion_matches_node_by_node_reference_with_variable_lengths():
    px, py, symbols, frames = random_lattice([3, 0, 1, 3], [4, 2, 5, 1])
    total = mutual_information_recursion(px, py, symbols, frames)
    for b in range(4):
        assert total[b].item() == pytest.approx(slow_lattice_score(px[b], py[b], symbols[b], frames[b]), rel=1e-12)


def test_recursion_gradcheck_float64():
    px, py, symbols, frames = random_lattice([2, 0, 1], [3, 2, 1])
    px.requires_grad_(True)
    py.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: mutual_information_recursion(a, b, symbols, frames), (px, py))


def test_occupation_is_the_gradient_and_sums_to_path_length():
    px, py, symbols, frames = random_lattice([3, 1], [4, 2])
    px.requires_grad_(True)
    py.requires_grad_(True)
    total, (px_occupation, py_occupation) = mutual_information_recursion(px, py, symbols, frames, return_occupation=True)
    px_grad, py_grad = torch.autograd.grad(total.sum(), (px, py))
    torch.testing.assert_close(px_occupation, px_grad)
    torch.testing.assert_close(py_occupation, py_grad)
    # every complete path takes S_b label steps and T_b blank steps
    torch.testing.assert_close(px_occupation.sum(dim=(1, 2)), symbols.to(px.dtype))
    torch.testing.assert_close(py_occupation.sum(dim=(1, 2)), frames.to(px.dtype))


def joint_setup(frame_lengths, label_lengths, vocab=7, dim=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batch, num_frames, num_symbols = len(frame_lengths), max(frame_lengths), max(label_lengths)
    encoder_out = torch.randn(batch, num_frames, dim, generator=generator, requires_grad=True)
    decoder_out = torch.randn(batch, num_symbols + 1, dim, generator=generator, requires_grad=True)
    output = torch.randn(dim, vocab, generator=generator)
    symbols = torch.randint(1, vocab, (batch, num_symbols), generator=generator)
    return encoder_out, decoder_out, output, symbols, torch.tensor(frame_lengths), torch.tensor(label_lengths)


def joint(am, lm, output):
    return torch.tanh(am + lm) @ output


@pytest.mark.parametrize(
    "frame_lengths, label_lengths", [([6, 3, 5, 2], [4, 0, 1, 2]), ([5, 4], [0, 0]), ([4, 3], [1, 1])]
)
def test_pruned_loss_with_whole_lattice_range_equals_torchaudio(frame_lengths, label_lengths):
    encoder_out, decoder_out, output, symbols, frames, labels = joint_setup(frame_lengths, label_lengths)
    full = rnnt_loss(joint(encoder_out.unsqueeze(2), decoder_out.unsqueeze(1), output), symbols, frames, labels, reduction="none")
    full_grads = torch.autograd.grad(full.sum(), (encoder_out, decoder_out))

    # the simple loss only supplies the (here irrelevant) bounds
    vocab = output.size(1)
    lm, am = torch.randn(len(frame_lengths), symbols.size(1) + 1, vocab), torch.randn(len(frame_lengths), frames.max(), vocab)
    _, occupation = simple_rnnt_loss(lm, am, symbols, labels, frames, return_occupation=True)
    ranges = prune_ranges(*occupation, labels, frames, prune_range=symbols.size(1) + 3)
    assert ranges.shape == (len(frame_lengths), frames.max(), symbols.size(1) + 1)
    am_pruned, lm_pruned = prune_joint_inputs(encoder_out, decoder_out, ranges)
    pruned = pruned_rnnt_loss(joint(am_pruned, lm_pruned, output), symbols, ranges, labels, frames, reduction="none")
    pruned_grads = torch.autograd.grad(pruned.sum(), (encoder_out, decoder_out))

    torch.testing.assert_close(pruned, full, rtol=1e-4, atol=0)
    for ours, reference in zip(pruned_grads, full_grads):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)


def test_narrow_pruning_keeps_a_subset_of_the_paths():
    encoder_out, decoder_out, output, symbols, frames, labels = joint_setup([8, 6, 7], [5, 3, 1], seed=3)
    full = rnnt_loss(joint(encoder_out.unsqueeze(2), decoder_out.unsqueeze(1), output), symbols, frames, labels, reduction="none")
    lm, am = torch.randn(3, 6, 7), torch.randn(3, 8, 7)
    _, occupation = simple_rnnt_loss(lm, am, symbols, labels, frames, return_occupation=True)
    ranges = prune_ranges(*occupation, labels, frames, prune_range=2)
    pruned = pruned_rnnt_loss(joint(*prune_joint_inputs(encoder_out, decoder_out, ranges), output), symbols, ranges, labels, frames, reduction="none")
    assert torch.isfinite(pruned).all()
    assert (pruned >= full - 1e-4).all()  # fewer paths: never more likely
    assert (pruned > full + 1e-3).any()


def slow_simple_loss(lm, am, symbols, num_symbols, num_frames, lm_scale, am_scale, unigram, blank=0):
    """Smoothed trivial-joiner loss of one sequence, scoring every (s, t) node explicitly."""
    px = torch.full((num_symbols, num_frames + 1), -math.inf, dtype=lm.dtype)
    py = torch.full((num_symbols + 1, num_frames), -math.inf, dtype=lm.dtype)
    for s in range(num_symbols + 1):
        lm_only = torch.log_softmax(lm[s], dim=0)
        for t in range(num_frames):
            joint_log_probs = torch.log_softmax(lm[s] + am[t], dim=0)
            am_only = torch.log(torch.softmax(am[t], dim=0) * unigram / (torch.softmax(am[t], dim=0) * unigram).sum())
            mixed = (1 - lm_scale - am_scale) * joint_log_probs + lm_scale * lm_only + am_scale * am_only
            py[s, t] = mixed[blank]
            if s < num_symbols:
                px[s, t] = mixed[symbols[s]]
    return -slow_lattice_score(px, py, num_symbols, num_frames)


def test_simple_loss_matches_slow_reference():
    generator = torch.Generator().manual_seed(1)
    frame_lengths, label_lengths, vocab = [5, 3, 4], [3, 0, 2], 6
    lm = torch.randn(3, 4, vocab, generator=generator, dtype=torch.float64)
    am = torch.randn(3, 5, vocab, generator=generator, dtype=torch.float64)
    symbols = torch.randint(1, vocab, (3, 3), generator=generator)
    loss = simple_rnnt_loss(
        lm, am, symbols, torch.tensor(label_lengths), torch.tensor(frame_lengths), lm_scale=0.25, am_scale=0.15, reduction="none"
    )
    # unigram LM: decoder softmax averaged over the valid label positions s <= S_b of the batch
    positions = torch.cat([torch.softmax(lm[b, : label_lengths[b] + 1], dim=-1) for b in range(3)])
    unigram = positions.mean(dim=0)
    for b in range(3):
        expected = slow_simple_loss(lm[b], am[b], symbols[b], label_lengths[b], frame_lengths[b], 0.25, 0.15, unigram)
        assert loss[b].item() == pytest.approx(expected, rel=1e-10)


def test_simple_loss_without_smoothing_is_the_rnnt_loss_of_the_additive_joiner():
    generator = torch.Generator().manual_seed(2)
    lm, am = torch.randn(2, 3, 5, generator=generator), torch.randn(2, 4, 5, generator=generator)
    symbols, labels, frames = torch.tensor([[1, 3], [2, 2]]), torch.tensor([2, 1]), torch.tensor([4, 3])
    simple = simple_rnnt_loss(lm, am, symbols, labels, frames, lm_scale=0.0, am_scale=0.0, reduction="none")
    full = rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, frames, labels, reduction="none")
    torch.testing.assert_close(simple, full, rtol=1e-5, atol=0)


def test_prune_ranges_form_a_connected_band_ending_at_the_last_label():
    generator = torch.Generator().manual_seed(4)
    frame_lengths, label_lengths = torch.tensor([12, 7, 9, 5]), torch.tensor([9, 0, 2, 8])
    lm, am = torch.randn(4, 10, 11, generator=generator), torch.randn(4, 12, 11, generator=generator)
    symbols = torch.randint(1, 11, (4, 9), generator=generator)
    _, occupation = simple_rnnt_loss(lm, am, symbols, label_lengths, frame_lengths, return_occupation=True)
    for window in (2, 3, 5):
        ranges = prune_ranges(*occupation, label_lengths, frame_lengths, prune_range=window)
        assert ranges.shape == (4, 12, window)
        assert ranges.min() >= 0 and ranges.max() <= 9
        torch.testing.assert_close(ranges - ranges[:, :, :1], torch.arange(window).expand(4, 12, window))
        begin = ranges[:, :, 0]
        assert (begin[:, 0] == 0).all()
        steps = begin[:, 1:] - begin[:, :-1]
        assert (steps >= 0).all() and (steps <= window - 1).all()
        for b in range(4):
            last = ranges[b, frame_lengths[b] - 1]
            if (window - 1) * frame_lengths[b] >= label_lengths[b]:
                assert last[0] <= label_lengths[b] <= last[-1]


def test_prune_ranges_follow_the_occupation():
    """A lattice whose mass sits on one path: the windows must contain that path."""
    num_symbols, num_frames = 6, 8
    path = [0, 0, 1, 3, 3, 4, 6, 6]  # labels emitted before each frame's blank
    px = torch.full((1, num_symbols, num_frames + 1), -30.0)
    py = torch.full((1, num_symbols + 1, num_frames), -30.0)
    for t, s in enumerate(path):
        py[0, s, t] = 0.0
        previous = path[t - 1] if t else 0
        for k in range(previous, s):
            px[0, k, t] = 0.0
    lengths = torch.tensor([num_symbols]), torch.tensor([num_frames])
    _, occupation = mutual_information_recursion(px, py, *lengths, return_occupation=True)
    ranges = prune_ranges(*occupation, *lengths, prune_range=3)
    for t, s in enumerate(path):
        previous = path[t - 1] if t else 0
        assert ranges[0, t, 0] <= previous and s <= ranges[0, t, -1], (t, ranges[0, t])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: prune_ranges(torch.zeros(1, 2, 4), torch.zeros(1, 3, 3), torch.tensor([2]), torch.tensor([3]), 1), "prune_range must be >= 2"),
        (lambda: simple_rnnt_loss(torch.zeros(1, 3, 4), torch.zeros(1, 2, 4), torch.tensor([[1, 0]]), torch.tensor([2]), torch.tensor([2])), "blank id 0"),
        (lambda: simple_rnnt_loss(torch.zeros(1, 3, 4), torch.zeros(1, 2, 4), torch.tensor([[1, 2]]), torch.tensor([2, 2]), torch.tensor([2])), "target_lengths must be"),
        (lambda: simple_rnnt_loss(torch.zeros(1, 3, 4), torch.full((1, 2, 4), float("nan")), torch.tensor([[1, 2]]), torch.tensor([2]), torch.tensor([2])), "am .* contains NaN"),
        (lambda: simple_rnnt_loss(torch.zeros(1, 3, 4), torch.zeros(1, 2, 4), torch.tensor([[1, 2]]), torch.tensor([2]), torch.tensor([2]), lm_scale=0.8, am_scale=0.5), "lm_scale and am_scale"),
        (lambda: pruned_rnnt_loss(torch.full((1, 2, 2, 4), float("nan")), torch.tensor([[1, 2]]), torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([2]), torch.tensor([2])), "logits contains NaN"),
        (lambda: pruned_rnnt_loss(torch.zeros(1, 2, 2, 4), torch.tensor([[1, 2]]), torch.zeros(1, 2, 3, dtype=torch.long), torch.tensor([2]), torch.tensor([2])), "ranges must be"),
        (lambda: pruned_rnnt_loss(torch.zeros(1, 2, 2, 4), torch.tensor([[1, 2]]), torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([2]), torch.tensor([3])), "frame_lengths must lie in"),
        (lambda: mutual_information_recursion(torch.zeros(1, 2, 4), torch.zeros(1, 2, 3), torch.tensor([2]), torch.tensor([3])), "do not match"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
