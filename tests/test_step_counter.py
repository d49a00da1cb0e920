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


class Counted(torch.nn.Module):
    """A module that counts its optimizer steps the way the Zipformer encoder and the transducer model do."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.counter = OptimizerStepCounter()
        self.counter.attach(self, "steps")

    def forward(self, x):
        self.counter.advance(self.steps, self.parameters())
        return self.linear(x).sum()


def train_epoch(model, optimizer, batches=3):
    """Forward, backward and step ``batches`` times, as ESPnet's trainer does within one epoch."""
    for _ in range(batches):
        model(torch.randn(4, 3)).backward()
        optimizer.step()
        optimizer.zero_grad()


def test_a_saved_state_dict_counts_the_step_after_the_last_forward_and_resumes_exactly():
    torch.manual_seed(0)
    straight = Counted()
    optimizer = torch.optim.SGD(straight.parameters(), lr=0.1)
    train_epoch(straight, optimizer)
    checkpoint = {key: value.clone() for key, value in straight.state_dict().items()}
    assert int(checkpoint["steps"]) == 3  # the third step followed the last forward
    train_epoch(straight, optimizer)  # the first forward must not count that step a second time
    assert int(straight.steps) == 5 and int(straight.state_dict()["steps"]) == 6

    resumed = Counted()  # a new process: its counter has never observed anything
    resumed.load_state_dict(checkpoint)
    train_epoch(resumed, torch.optim.SGD(resumed.parameters(), lr=0.1))
    assert int(resumed.state_dict()["steps"]) == 6


def test_loading_a_state_dict_is_not_counted_as_a_step():
    model = Counted()
    model(torch.randn(4, 3))
    model.load_state_dict(Counted().state_dict())  # writes the parameters in place, like a step would
    model(torch.randn(4, 3))
    assert int(model.steps) == 0


def test_ranks_agree_when_only_rank_0_takes_the_state_dict_and_ddp_broadcasts_its_buffers():
    torch.manual_seed(0)
    ranks = [Counted(), Counted()]
    ranks[1].load_state_dict(ranks[0].state_dict())
    optimizers = [torch.optim.SGD(rank.parameters(), lr=0.1) for rank in ranks]
    for epoch in range(3):
        for batch in range(2):
            ranks[1].steps.copy_(ranks[0].steps)  # DDP's broadcast_buffers before every forward
            for rank, optimizer in zip(ranks, optimizers):
                rank(torch.ones(4, 3)).backward()
                optimizer.step()
                optimizer.zero_grad()
        ranks[0].state_dict()  # ESPnet saves the checkpoint on rank 0 only
    ranks[1].steps.copy_(ranks[0].steps)
    counts = [rank.counter.advance(rank.steps, rank.parameters()) for rank in ranks]
    assert counts == [6, 6] and [int(rank.steps) for rank in ranks] == [6, 6]


def test_a_deep_copy_counts_on_its_own():
    import copy

    model = Counted()
    model(torch.randn(4, 3))
    twin = copy.deepcopy(model)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    twin(torch.randn(4, 3)).backward()
    optimizer.step()
    assert int(twin.state_dict()["steps"]) == 1
    assert int(model.state_dict()["steps"]) == 0
