import pytest
import torch

from hybrid_encoders.schedulers.noam_hold_annealing import NoamHoldAnnealing


def _reference(step, peak, warmup, hold, decay, min_lr, max_steps):
    """The NeMo/WeNet schedule, written out branch by branch."""
    if step <= warmup:
        return peak * (step + 1) / (warmup + 1)
    if step < warmup + hold:
        return peak
    if step > max_steps:
        return min_lr
    return max(min_lr, peak * warmup**decay / (step - hold) ** decay)


def _optimizer(lrs=(2e-3, 1e-3)):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)])


def _run(scheduler, optimizer, steps):
    seen = []
    for _ in range(steps):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize("decay, hold", [(1.0, 30), (0.5, 0), (2.0, 7)])
def test_values_follow_the_formula(decay, hold):
    optimizer = _optimizer()
    settings = dict(warmup_steps=10, hold_steps=hold, decay_rate=decay, min_lr=1e-4, max_steps=150)
    scheduler = NoamHoldAnnealing(optimizer, **settings)
    for step, lrs in enumerate(_run(scheduler, optimizer, 170)):
        for lr, peak in zip(lrs, (2e-3, 1e-3)):
            expected = _reference(step, peak, 10, hold, decay, 1e-4, 150)
            assert lr == pytest.approx(expected, rel=1e-9), step


def test_peak_is_reached_continuously_and_decay_never_stops_without_max_steps():
    optimizer = _optimizer((1.0,))
    lrs = [lr for (lr,) in _run(NoamHoldAnnealing(optimizer, warmup_steps=4, hold_steps=3, min_lr=0.0), optimizer, 60)]
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lrs[4:8] == pytest.approx([1.0] * 4)  # end of warm-up, hold, and the first decay step (4 / (7 - 3))
    assert lrs[8] == pytest.approx(4 / 5)
    assert lrs[59] == pytest.approx(4 / 56)


def test_resume_from_state_dict_continues_identically():
    settings = dict(warmup_steps=5, hold_steps=5, decay_rate=1.0, min_lr=1e-5, max_steps=40)
    optimizer = _optimizer()
    scheduler = NoamHoldAnnealing(optimizer, **settings)
    full = _run(scheduler, optimizer, 50)
    optimizer = _optimizer()
    scheduler = NoamHoldAnnealing(optimizer, **settings)
    _run(scheduler, optimizer, 17)
    state, optimizer_state = scheduler.state_dict(), optimizer.state_dict()
    # ESPnet's resume order: build both afresh, then load the optimizer's state, then the scheduler's.
    resumed_optimizer = _optimizer()
    resumed = NoamHoldAnnealing(resumed_optimizer, **settings)
    resumed_optimizer.load_state_dict(optimizer_state)
    resumed.load_state_dict(state)
    assert _run(resumed, resumed_optimizer, 33) == full[17:]


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"warmup_steps": 0}, "warmup_steps"),
        ({"hold_steps": -1}, "hold_steps"),
        ({"decay_rate": 0.0}, "decay_rate"),
        ({"min_lr": -1.0}, "min_lr"),
        ({"min_lr": "tiny"}, "min_lr"),
        ({"warmup_steps": 10, "hold_steps": 10, "max_steps": 15}, "max_steps"),
    ],
)
def test_invalid_settings_name_the_key(settings, key):
    with pytest.raises(ValueError, match=key):
        NoamHoldAnnealing(_optimizer(), **settings)


def test_yaml_style_string_numbers_are_accepted():
    optimizer = _optimizer((1.0,))
    scheduler = NoamHoldAnnealing(optimizer, warmup_steps=2, hold_steps=0, decay_rate="1.0", min_lr="1e-5")
    assert scheduler.min_lr == 1e-5 and scheduler.decay_rate == 1.0
