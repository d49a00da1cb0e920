import torch

from hybrid_encoders.regularization.whiten import Whiten, whitening_metric


def _eigen_metric(x):
    """One group: mean of squared covariance eigenvalues over the squared mean eigenvalue."""
    centred = x - x.mean(dim=0, keepdim=True)
    eigenvalues = torch.linalg.eigvalsh(centred.T @ centred)
    return (eigenvalues**2).mean() / eigenvalues.mean() ** 2


def test_metric_is_one_for_white_data_and_matches_eigen_form():
    torch.manual_seed(0)
    x = torch.randn(30, 5, dtype=torch.float64) @ torch.randn(5, 5, dtype=torch.float64)
    torch.testing.assert_close(whitening_metric(x, 1), _eigen_metric(x))
    assert float(whitening_metric(x, 1)) > 1.5
    # two groups with equal traces and white covariances give 1
    blocks = torch.cat([torch.randn(200, 2), torch.randn(200, 2)], dim=1).double()
    q = torch.linalg.qr(blocks - blocks.mean(0))[0]
    assert abs(float(whitening_metric(q, 2)) - 1.0) < 1e-9


def test_whiten_identity_forward_and_penalty_gradient():
    torch.manual_seed(0)
    x = (torch.randn(30, 5, dtype=torch.float64) @ torch.randn(5, 5, dtype=torch.float64)).requires_grad_(True)
    upstream = torch.randn(30, 5, dtype=torch.float64)
    whiten = Whiten(1, whitening_limit=1.1, prob=(0.5, 1.0), grad_scale=0.1).train()
    y = whiten(x)
    assert torch.equal(y, x)
    y.backward(upstream)
    leaf = x.detach().clone().requires_grad_(True)
    (penalty,) = torch.autograd.grad(_eigen_metric(leaf), leaf)
    expected = upstream + penalty * (0.1 * upstream.norm() / penalty.norm())
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-6)  # the penalty is computed in float32
    assert whiten.prob == 1.0


def test_whiten_penalty_gradient_with_groups_equals_autograd_of_the_metric():
    """The closed-form gradient against autograd through :func:`whitening_metric`, on (B, T, C) with 3 groups."""
    torch.manual_seed(2)
    x = (torch.randn(2, 40, 12, dtype=torch.float64) @ torch.randn(12, 12, dtype=torch.float64)).requires_grad_(True)
    upstream = torch.randn(2, 40, 12, dtype=torch.float64)
    whiten = Whiten(3, whitening_limit=1.0, prob=1.0, grad_scale=0.05).train()
    whiten(x).backward(upstream)
    leaf = x.detach().clone().requires_grad_(True)
    (penalty,) = torch.autograd.grad(whitening_metric(leaf, 3), leaf)
    expected = upstream + penalty * (0.05 * upstream.norm() / penalty.norm())
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-7)  # the penalty is computed in float32
    assert (x.grad - upstream).abs().max() > 1e-3


def test_whiten_under_limit_leaves_gradient_and_lowers_probability():
    x = torch.randn(30, 5, dtype=torch.float64, requires_grad=True)
    whiten = Whiten(1, whitening_limit=1e6, prob=(0.5, 1.0), grad_scale=0.1).train()
    upstream = torch.randn(30, 5, dtype=torch.float64)
    whiten(x).backward(upstream)
    torch.testing.assert_close(x.grad, upstream)
    assert whiten.prob == 0.5
    assert whiten.eval()(x) is x


def test_switching_to_training_restarts_the_probability():
    whiten = Whiten(1, whitening_limit=1e6, prob=(0.5, 1.0), grad_scale=0.1).train()
    whiten(torch.randn(30, 5, requires_grad=True)).sum().backward()
    assert whiten.prob == 0.5
    whiten.eval()
    assert whiten.prob == 0.5
    whiten.train()
    assert whiten.prob == 1.0


def test_an_epoch_resumed_from_a_checkpoint_whitens_like_an_uninterrupted_one():
    """ESPnet's loop (train(), seeded epoch, steps, eval(), checkpoint) with a limit that holds in epoch 1 and is
    exceeded in epoch 2: the uninterrupted run must check as often as a freshly started (resumed) process does."""
    import random

    from hybrid_encoders.regularization.scheduled_float import ScheduledFloat

    def build():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 5))
        model.append(Whiten(1, whitening_limit=ScheduledFloat((2.0, 1e6), (3.0, 1.0)), prob=(0.0, 1.0), grad_scale=0.5))
        return model, torch.optim.SGD(model.parameters(), lr=0.1)

    def epoch(model, optimizer, index):
        model.train()
        random.seed(index)
        torch.manual_seed(index)
        for step in range(3):
            model[1].whitening_limit.batch_count = 3 * (index - 1) + step
            (model(torch.randn(30, 5)) * torch.randn(30, 5)).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()

    straight, straight_optimizer = build()
    epoch(straight, straight_optimizer, 1)
    checkpoint = (straight.state_dict(), straight_optimizer.state_dict())
    checkpoint = ({k: v.clone() for k, v in checkpoint[0].items()}, checkpoint[1])
    epoch(straight, straight_optimizer, 2)

    resumed, resumed_optimizer = build()
    resumed.load_state_dict(checkpoint[0])
    resumed_optimizer.load_state_dict(checkpoint[1])
    epoch(resumed, resumed_optimizer, 2)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
