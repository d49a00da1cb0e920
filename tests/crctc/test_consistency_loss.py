"""The CR-CTC consistency loss against a per-frame KL computed by hand, its stop-gradient, padding and input checks."""

import pytest
import torch

from hybrid_encoders.crctc.loss import consistency_loss

LENGTHS = torch.tensor([7, 4, 2, 7, 4, 2])  # B = 3 utterances, two views each


def views(seed=0, frames=7, vocab=5):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(LENGTHS), frames, vocab, generator=generator, dtype=torch.float64) * 2
    return logits.log_softmax(-1)


def reference(log_probs, lengths):
    """L_CR averaged over utterances, by loops: sum over both views and valid frames of KL(other view || this view)."""
    rows = log_probs.size(0)
    total = 0.0
    for row in range(rows):
        other = (row + rows // 2) % rows
        for frame in range(int(lengths[row])):
            p = log_probs[other, frame].exp()  # the target distribution (the other view)
            q = log_probs[row, frame].exp()  # the regularised view
            total += float((p * (p.log() - q.log())).sum())
    return total / (rows // 2) / 2


def test_matches_the_per_frame_kl_reference():
    log_probs = views()
    assert consistency_loss(log_probs, LENGTHS).item() == pytest.approx(reference(log_probs, LENGTHS), rel=1e-6)


def test_is_zero_for_identical_views_and_positive_otherwise():
    one = views()[:3]
    assert consistency_loss(torch.cat([one, one]), LENGTHS).item() == pytest.approx(0.0, abs=1e-7)
    assert consistency_loss(views(), LENGTHS).item() > 0.01


def test_gradient_flows_only_into_the_regularised_view():
    log_probs = views().requires_grad_()
    consistency_loss(log_probs, LENGTHS).backward()
    valid = (torch.arange(7) < LENGTHS.unsqueeze(1)).unsqueeze(-1)
    # d/d log q of sum p (log p - log q), p held fixed: -p / (2B). A target that is not detached adds
    # p (log p - log q + 1) terms from the other direction.
    expected = -log_probs.detach().roll(3, dims=0).exp() * valid / 6
    assert torch.allclose(log_probs.grad, expected, atol=1e-12)

    no_stop_gradient = log_probs.detach().clone().requires_grad_()
    other = no_stop_gradient.roll(3, dims=0)
    ((other.exp() * (other - no_stop_gradient)).sum(-1) * valid[..., 0]).sum().div(6).backward()
    assert not torch.allclose(no_stop_gradient.grad, expected, atol=1e-3)  # the check above can fail


def test_logit_gradient_is_the_posterior_difference():
    logits = torch.randn(6, 7, 5, dtype=torch.float64, requires_grad=True)
    consistency_loss(logits.log_softmax(-1), LENGTHS).backward()
    posteriors = logits.detach().softmax(-1)
    valid = (torch.arange(7) < LENGTHS.unsqueeze(1)).unsqueeze(-1)
    expected = (posteriors - posteriors.roll(3, dims=0)) * valid / 6
    assert torch.allclose(logits.grad, expected, atol=1e-12)


def test_padded_frames_do_not_count_even_when_not_finite():
    log_probs = views()
    padded = torch.arange(7) >= LENGTHS.unsqueeze(1)
    garbage = log_probs.clone()
    garbage[padded] = float("nan")
    garbage.requires_grad_()
    loss = consistency_loss(garbage, LENGTHS)
    assert loss.item() == pytest.approx(reference(log_probs, LENGTHS), rel=1e-6)
    loss.backward()
    assert torch.isfinite(garbage.grad).all()
    assert (garbage.grad[padded] == 0).all()


def test_half_precision_input_gives_a_float32_loss():
    log_probs = views().to(torch.bfloat16)
    loss = consistency_loss(log_probs, LENGTHS)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference(log_probs.double(), LENGTHS), rel=1e-5)


@pytest.mark.parametrize(
    "log_probs, lengths, message",
    [
        (torch.zeros(5, 7, 3), torch.full((5,), 7), r"\(2B, T, V\)"),
        (torch.zeros(6, 7), torch.full((6,), 7), r"\(2B, T, V\)"),
        (torch.zeros(6, 7, 3), torch.full((3,), 7), r"lengths must have shape \(6,\)"),
        (torch.zeros(6, 7, 3), torch.tensor([7, 4, 2, 7, 4, 3]), "the two views of an utterance must have the same"),
    ],
)
def test_bad_input_is_named(log_probs, lengths, message):
    with pytest.raises(ValueError, match=message):
        consistency_loss(log_probs, lengths)
