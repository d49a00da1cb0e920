"""Eden / Eden2: values against the formula, ESPnet's step()/step(val) calls, resume, and bad input."""

import io

import pytest
import torch
from espnet2.schedulers.abs_scheduler import AbsBatchStepScheduler, AbsEpochStepScheduler, AbsValEpochStepScheduler

from hybrid_encoders.optim.scaled_adam import ScaledAdam
from hybrid_encoders.schedulers.eden import Eden, Eden2


def eden_formula(base_lr, batch, epoch, lr_batches, lr_epochs, warmup_batches, warmup_start):
    """Zipformer paper / icefall Eden for the 1-based optimizer step ``batch`` after ``epoch`` completed epochs."""
    warmup = 1.0 if batch >= warmup_batches else warmup_start + (1 - warmup_start) * batch / warmup_batches
    return (
        base_lr
        * ((batch**2 + lr_batches**2) / lr_batches**2) ** -0.25
        * ((epoch**2 + lr_epochs**2) / lr_epochs**2) ** -0.25
        * warmup
    )


def eden2_formula(base_lr, batch, lr_batches, warmup_batches, warmup_start):
    warmup = 1.0 if batch >= warmup_batches else warmup_start + (1 - warmup_start) * batch / warmup_batches
    return base_lr * ((batch**2 + lr_batches**2) / lr_batches**2) ** -0.5 * warmup


def two_group_optimizer():
    """Two groups with different learning rates (as ESPnet's exclude_weight_decay would give)."""
    return ScaledAdam(
        [{"params": [torch.nn.Parameter(torch.ones(3))]}, {"params": [torch.nn.Parameter(torch.ones(2))], "lr": 0.01}],
        lr=0.045,
    )


def drive(scheduler, steps_per_epoch, epochs, extra_steps=0):
    """Call the scheduler as ESPnet's trainer does: step() after each optimizer step, step(val) after each epoch."""
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            scheduler.step()
        scheduler.step(1.234)  # the validation loss; Eden ignores its value
    for _ in range(extra_steps):
        scheduler.step()


@pytest.mark.parametrize(
    "epochs, steps_per_epoch, extra_steps",
    [(0, 0, 0), (0, 0, 1), (0, 0, 498), (0, 0, 499), (0, 0, 500), (1, 300, 0), (2, 300, 17), (3, 4000, 5), (7, 1500, 0)],
)
def test_eden_values_follow_the_formula(epochs, steps_per_epoch, extra_steps):
    optimizer = two_group_optimizer()
    scheduler = Eden(optimizer)  # icefall zipformer/train.py: 7500, 3.5, warm-up 500 from 0.1
    drive(scheduler, steps_per_epoch, epochs, extra_steps)
    steps = epochs * steps_per_epoch + extra_steps
    assert scheduler.state_dict() == {"batch": steps, "epoch": epochs}
    for group, base_lr in zip(optimizer.param_groups, (0.045, 0.01)):
        expected = eden_formula(base_lr, steps + 1, epochs, 7500, 3.5, 500, 0.1)
        assert group["lr"] == pytest.approx(expected, rel=1e-12)
    assert scheduler.get_last_lr() == [g["lr"] for g in optimizer.param_groups]


def test_eden_first_steps_and_epoch_boundary():
    """The first optimizer step uses b = 1, epoch 0 (icefall's first batch); an epoch end only changes the epoch term."""
    optimizer = two_group_optimizer()
    scheduler = Eden(optimizer, lr_batches=10, lr_epochs=2, warmup_batches=4, warmup_start=0.5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.045 * (101 / 100) ** -0.25 * 0.625, rel=1e-12)
    for _ in range(5):
        scheduler.step()
    before = optimizer.param_groups[0]["lr"]
    scheduler.step(0.5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(before * (5 / 4) ** -0.25, rel=1e-12)
    scheduler.step(None, epoch=3)  # an explicit epoch count, as icefall's step_epoch(epoch)
    assert scheduler.epoch == 3
    assert optimizer.param_groups[0]["lr"] == pytest.approx(eden_formula(0.045, 6, 3, 10, 2, 4, 0.5), rel=1e-12)


@pytest.mark.parametrize("steps", [0, 1, 250, 499, 500, 20000])
def test_eden2_values_follow_the_formula(steps):
    optimizer = two_group_optimizer()
    scheduler = Eden2(optimizer, lr_batches=5000, warmup_batches=500, warmup_start=0.5)
    for _ in range(steps):
        scheduler.step()
    assert scheduler.state_dict() == {"batch": steps}
    for group, base_lr in zip(optimizer.param_groups, (0.045, 0.01)):
        assert group["lr"] == pytest.approx(eden2_formula(base_lr, steps + 1, 5000, 500, 0.5), rel=1e-12)


def test_espnet_dispatch_classes():
    """ESPnet's trainer steps a scheduler per batch if AbsBatchStepScheduler, per epoch with the validation value
    if AbsValEpochStepScheduler (checked first); Eden needs both, Eden2 only the first."""
    optimizer = two_group_optimizer()
    eden, eden2 = Eden(optimizer), Eden2(optimizer)
    assert isinstance(eden, AbsBatchStepScheduler) and isinstance(eden, AbsValEpochStepScheduler)
    assert isinstance(eden2, AbsBatchStepScheduler) and not isinstance(eden2, AbsEpochStepScheduler)


def train(optimizer_and_scheduler, steps, start=0):
    """Train a tiny model on fixed batches from step ``start``; returns the model, optimizer, scheduler and lrs."""
    model, optimizer, scheduler = optimizer_and_scheduler
    lrs = []
    for step in range(start, steps):
        generator = torch.Generator().manual_seed(1000 + step)
        x, y = torch.randn(8, 4, generator=generator), torch.randn(8, 2, generator=generator)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        scheduler.step()
        if step % 7 == 6:
            scheduler.step(0.0)
        lrs.append([g["lr"] for g in optimizer.param_groups])
    return lrs


def build(scheduler_class, **scheduler_conf):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    optimizer = ScaledAdam(model.parameters(), lr=0.045, clipping_update_period=10)
    return model, optimizer, scheduler_class(optimizer, **scheduler_conf)


@pytest.mark.parametrize("scheduler_class", [Eden, Eden2])
def test_resume_is_bit_identical(scheduler_class):
    """N steps straight == N/2 steps, checkpoint (as ESPnet's checkpoint.pth), rebuild from the config, load, N/2."""
    conf = {"lr_batches": 20, "warmup_batches": 5}
    straight = build(scheduler_class, **conf)
    straight_lrs = train(straight, 30)

    first = build(scheduler_class, **conf)
    first_lrs = train(first, 15)
    buffer = io.BytesIO()
    model, optimizer, scheduler = first
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer)
    resumed = build(scheduler_class, **conf)
    # ESPnet's Trainer.resume order: model, optimizers, then schedulers.
    resumed[0].load_state_dict(checkpoint["model"])
    resumed[1].load_state_dict(checkpoint["optimizer"])
    resumed[2].load_state_dict(checkpoint["scheduler"])
    resumed_lrs = first_lrs + train(resumed, 30, start=15)

    assert resumed_lrs == straight_lrs
    assert resumed[2].state_dict() == straight[2].state_dict()
    for a, b in zip(straight[0].parameters(), resumed[0].parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "scheduler_class, conf, key",
    [
        (Eden, {"lr_batches": 0}, "lr_batches"),
        (Eden, {"lr_batches": -5}, "lr_batches"),
        (Eden, {"lr_epochs": 0}, "lr_epochs"),
        (Eden, {"warmup_batches": -1}, "warmup_batches"),
        (Eden, {"warmup_start": 1.5}, "warmup_start"),
        (Eden2, {"lr_batches": 0.0}, "lr_batches"),
        (Eden2, {"warmup_start": -0.1}, "warmup_start"),
    ],
)
def test_bad_configuration_names_the_key(scheduler_class, conf, key):
    with pytest.raises(ValueError, match=key):
        scheduler_class(two_group_optimizer(), **conf)


def test_zero_learning_rate_group_is_rejected():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.0)
    with pytest.raises(ValueError, match="lr of parameter group 0"):
        Eden(optimizer)


def test_state_of_another_scheduler_is_rejected():
    with pytest.raises(ValueError, match="epoch"):
        Eden(two_group_optimizer()).load_state_dict({"batch": 3})
