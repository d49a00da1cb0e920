"""OptimizerStepCounter: one count per optimizer step on the watched parameters, whatever the number of forwards."""

import torch

from hybrid_encoders.step_counter import OptimizerStepCounter


def test_counts_steps_not_forwards_and_ignores_other_parameters():
    model = torch.nn.Linear(3, 2)
    other = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    other_optimizer = torch.optim.SGD([other], lr=0.1)
    count = torch.zeros((), dtype=torch.int64)
    counter = OptimizerStepCounter()
    seen = []
    for step in range(3):
        for _ in range(3):  # accum_grad: 3
            counter.advance(count, model.parameters())
            seen.append(int(count))
            model(torch.randn(4, 3)).sum().backward()
            other.grad = torch.ones(2)
            other_optimizer.step()
        optimizer.step()
        optimizer.zero_grad()
    assert seen == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    counter.advance(count, model.parameters())
    assert int(count) == 3


def test_a_step_skipped_for_non_finite_gradients_is_not_counted():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    count = torch.zeros((), dtype=torch.int64)
    counter = OptimizerStepCounter()
    counter.advance(count, model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    model.weight.grad.fill_(float("nan"))
    if torch.isfinite(grad_norm) and all(torch.isfinite(p.grad).all() for p in model.parameters()):
        optimizer.step()  # not reached: ESPnet's trainer skips the step, as here
    counter.advance(count, model.parameters())
    assert int(count) == 0
