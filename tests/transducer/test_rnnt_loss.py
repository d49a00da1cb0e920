"""The checked torchaudio RNN-T loss: values against a slow forward-algorithm reference, and bad input."""

import math

import pytest
import torch

from hybrid_encoders.transducer.rnnt_loss import RNNTLoss, rnnt_loss


def slow_rnnt_nll(log_probs: torch.Tensor, labels, blank: int) -> float:
    """-log P(labels) by the textbook forward recursion over (t, u) with Python loops.

    Args:
        log_probs: (T, U+1, V) log-softmaxed joint outputs of one utterance.
        labels: the U labels.
    """
    num_frames, nodes, _ = log_probs.shape
    alpha = [[-math.inf] * nodes for _ in range(num_frames)]
    alpha[0][0] = 0.0
    for t in range(num_frames):
        for u in range(nodes):
            if t == 0 and u == 0:
                continue
            terms = []
            if t > 0:
                terms.append(alpha[t - 1][u] + float(log_probs[t - 1, u, blank]))
            if u > 0:
                terms.append(alpha[t][u - 1] + float(log_probs[t, u - 1, labels[u - 1]]))
            alpha[t][u] = max(terms) + math.log(sum(math.exp(x - max(terms)) for x in terms))
    return -(alpha[num_frames - 1][nodes - 1] + float(log_probs[num_frames - 1, nodes - 1, blank]))


def random_batch(frame_lengths, label_lengths, vocab=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batch = len(frame_lengths)
    logits = torch.randn(batch, max(frame_lengths), max(label_lengths) + 1, vocab, generator=generator)
    targets = torch.randint(1, vocab, (batch, max(label_lengths)), generator=generator)
    return logits, targets, torch.tensor(frame_lengths), torch.tensor(label_lengths)


def test_matches_slow_reference_with_variable_lengths_and_padding():
    logits, targets, frames, labels = random_batch([6, 4, 3], [3, 0, 1])
    targets[1:, 1:] = -1  # ESPnet-style padding must not matter
    loss = rnnt_loss(logits, targets, frames, labels, blank=0, reduction="none")
    for b in range(3):
        log_probs = logits[b, : frames[b], : labels[b] + 1].log_softmax(-1)
        expected = slow_rnnt_nll(log_probs, targets[b, : labels[b]].tolist(), blank=0)
        assert loss[b].item() == pytest.approx(expected, rel=1e-5)
    assert rnnt_loss(logits, targets, frames, labels).item() == pytest.approx(loss.mean().item(), rel=1e-6)
    assert rnnt_loss(logits, targets, frames, labels, reduction="sum").item() == pytest.approx(loss.sum().item(), rel=1e-6)


def test_module_uses_the_configured_blank():
    logits, targets, frames, labels = random_batch([4, 3], [2, 2])
    targets = targets.masked_fill(targets == 4, 1)
    criterion = RNNTLoss(blank=4)
    log_probs = logits[0].log_softmax(-1)
    expected = slow_rnnt_nll(log_probs, targets[0].tolist(), blank=4)
    assert RNNTLoss(blank=4, reduction="none")(logits, targets, frames, labels)[0].item() == pytest.approx(expected, rel=1e-5)
    assert criterion(logits, targets, frames, labels).dim() == 0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(targets=a["targets"].index_fill(1, torch.tensor([0]), 0)), "blank id 0"),
        (lambda a: a.update(targets=a["targets"].index_fill(1, torch.tensor([0]), 7)), r"targets must lie in \[0, 5\)"),
        (lambda a: a.update(frame_lengths=torch.tensor([6, 4])), r"frame_lengths must be a \(3,\)"),
        (lambda a: a.update(frame_lengths=torch.tensor([5, 4, 3])), "frame_lengths must lie in"),
        (lambda a: a.update(target_lengths=torch.tensor([2, 1, 1])), "target_lengths must lie in"),
        (lambda a: a.update(target_lengths=torch.tensor([3.0, 1.0, 1.0])), "target_lengths must be"),
        (lambda a: a.update(targets=a["targets"][:, :2]), "targets must be"),
        (lambda a: a["logits"].__setitem__((1, 2, 0, 3), float("nan")), "logits contains NaN"),
        (lambda a: a.update(reduction="avg"), "reduction must be one of"),
    ],
)
def test_bad_input_is_rejected_before_the_kernel(change, message):
    logits, targets, frames, labels = random_batch([6, 4, 3], [3, 2, 1])
    arguments = dict(logits=logits, targets=targets, frame_lengths=frames, target_lengths=labels)
    change(arguments)
    with pytest.raises(ValueError, match=message):
        rnnt_loss(**arguments)
