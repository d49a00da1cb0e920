"""ScaledAdam: update equality with a slow per-tensor reference, resume, ESPnet's parameter groups, bad input,
detection of gradients clipped before the step, non-finite gradients, and a toy problem against Adam."""

import copy
import io
import math
import warnings

import pytest
import torch
from espnet2.optimizers.optim_groups import configure_optimizer
from espnet2.schedulers.warmup_lr import WarmupLR

from hybrid_encoders.optim.scaled_adam import ExternalClippingWarning, ScaledAdam
from hybrid_encoders.schedulers.eden import Eden


class ReferenceScaledAdam:
    """The equations of docs/scaled_adam_eden.md (icefall's ScaledAdam), one tensor at a time, in plain loops.

    ``params`` is a list of tensors updated in place; ``step(grads)`` takes one gradient per tensor.
    """

    def __init__(self, params, lr, betas, scalar_lr_scale, eps, param_min_rms, param_max_rms, scalar_max,
                 size_update_period, clipping_update_period, clipping_scale):
        self.params = params
        self.lr, (self.beta1, self.beta2) = lr, betas
        self.scalar_lr_scale, self.eps = scalar_lr_scale, eps
        self.param_min_rms, self.param_max_rms, self.scalar_max = param_min_rms, param_max_rms, scalar_max
        self.size_update_period, self.clipping_update_period = size_update_period, clipping_update_period
        self.clipping_scale = clipping_scale
        self.t = 0
        self.norms = [0.0] * clipping_update_period
        self.threshold = None
        self.v = [torch.zeros_like(p) for p in params]
        self.m = [torch.zeros_like(p) for p in params]
        self.rms = [p.pow(2).mean().sqrt() for p in params]
        self.scale_grads = [[0.0] * size_update_period for _ in params]
        self.scale_v = [0.0 for _ in params]
        self.clip_factors = []  # for the test: was clipping exercised?
        self.scale_steps = []  # for the test: was the scale learned?

    def clip_factor(self, grads):
        if self.clipping_scale is None or self.t == 0:
            return 1.0
        total = 0.0
        for p, g, rms in zip(self.params, grads, self.rms):
            weight = self.scalar_lr_scale if p.numel() == 1 else float(rms)
            total += float((g * weight).pow(2).sum())
        total = math.sqrt(total)
        self.norms[self.t % self.clipping_update_period] = total
        early = self.t in (10, 20, 40) and self.t < self.clipping_update_period
        if self.t % self.clipping_update_period == 0 or early:
            ordered = sorted(self.norms)
            if early:
                ordered = ordered[-self.t:]
            median = ordered[min(len(ordered) - 1, (len(ordered) // 4) * 2)]
            self.threshold = self.clipping_scale * median * (2.0 if early else 1.0)
        if self.threshold is None:
            return 1.0
        return min(1.0, self.threshold / (total + 1e-20))

    def step(self, grads):
        c = self.clip_factor(grads)
        self.clip_factors.append(c)
        t = self.t
        for i, (p, g) in enumerate(zip(self.params, grads)):
            g = g * c
            scalar = p.numel() == 1
            lr = self.lr * self.scalar_lr_scale if scalar else self.lr
            self.v[i] = self.beta2 * self.v[i] + (1 - self.beta2) * g * g
            correction = 1 - self.beta2 ** (t + 1)
            v_hat = self.v[i] / correction if correction < 0.99 else self.v[i]
            delta = -lr * g / (v_hat.sqrt() + self.eps)
            if not scalar:
                k = self.size_update_period
                self.scale_grads[i][t % k] = float((p * g).sum())
                if t % k == k - 1:
                    self.rms[i] = p.pow(2).mean().sqrt()
                rms = float(self.rms[i])
                delta = delta * max(rms, self.param_min_rms)
                if t % k == k - 1 and t > 0:
                    beta = self.beta2**k
                    self.scale_v[i] = beta * self.scale_v[i] + (1 - beta) * sum(s * s for s in self.scale_grads[i]) / k
                    correction = 1 - beta ** ((t + 1) // k)
                    size = -self.lr * self.scalar_lr_scale * math.sqrt(correction) * sum(self.scale_grads[i])
                    size /= math.sqrt(self.scale_v[i]) + self.eps
                    if rms < self.param_min_rms:
                        size = 0.0
                    size = min(max(size, -0.1), 0.1)
                    size = min(size, (self.param_max_rms - rms) / rms)
                    self.scale_steps.append(size)
                    delta = delta + p * size
            self.m[i] = self.beta1 * self.m[i] + (1 - self.beta1) * delta
            p += self.m[i]
            if scalar:
                p.clamp_(-self.scalar_max, self.scalar_max)
        self.t += 1


CONFIG = dict(
    lr=0.05,
    betas=(0.9, 0.98),
    scalar_lr_scale=0.1,
    eps=1e-8,
    param_min_rms=1e-5,
    param_max_rms=3.0,
    scalar_max=0.6,
    size_update_period=4,
    clipping_update_period=100,
    clipping_scale=2.0,
)


def make_params():
    """A 0-dim and a (1,) scalar, vectors (one all-zero), a matrix and a 3-d tensor, in float64."""
    generator = torch.Generator().manual_seed(0)
    return [
        torch.tensor(0.55, dtype=torch.float64),
        torch.tensor([-0.3], dtype=torch.float64),
        torch.randn(5, generator=generator, dtype=torch.float64),
        torch.zeros(5, dtype=torch.float64),
        torch.randn(3, 4, generator=generator, dtype=torch.float64) * 0.2,
        torch.randn(2, 3, 4, generator=generator, dtype=torch.float64) * 4.0,
    ]


def make_grads(params, steps, seed=1):
    """Random gradients with occasional large spikes (so that clipping engages) and a push of the first scalar
    towards +scalar_max."""
    generator = torch.Generator().manual_seed(seed)
    sequence = []
    for t in range(steps):
        spike = 8.0 if t % 7 == 5 else 1.0
        grads = [torch.randn(p.shape, generator=generator, dtype=torch.float64) * spike for p in params]
        grads[0] = grads[0] - 1.0
        sequence.append(grads)
    return sequence


def run_ours(params, grads_sequence, **config):
    params = [torch.nn.Parameter(p.clone()) for p in params]
    optimizer = ScaledAdam(params, **config)
    for grads in grads_sequence:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
    return params, optimizer


@pytest.mark.parametrize(
    "overrides, steps",
    [
        ({}, 45),  # early thresholds at steps 10, 20, 40
        ({"clipping_update_period": 12, "clipping_scale": 0.8}, 40),  # periodic thresholds, heavy clipping
        ({"clipping_scale": None}, 30),
        ({"size_update_period": 3, "betas": (0.5, 0.9), "param_max_rms": 1.5}, 30),
        ({"lr": 0.4, "clipping_scale": None}, 30),  # scale steps reach their ±0.1 limit
    ],
)
def test_matches_reference(overrides, steps):
    config = {**CONFIG, **overrides}
    grads_sequence = make_grads(make_params(), steps)
    ours, _ = run_ours(make_params(), grads_sequence, **config)
    reference = ReferenceScaledAdam(make_params(), **config)
    for grads in grads_sequence:
        reference.step(grads)
    for mine, theirs in zip(ours, reference.params):
        torch.testing.assert_close(mine.detach(), theirs, rtol=1e-10, atol=1e-12)
    assert any(abs(s) > 1e-4 for s in reference.scale_steps), "the scale-learning step was not exercised"
    assert reference.params[0].item() == config["scalar_max"], "the scalar clamp was not exercised"
    if config["lr"] >= 0.4:
        assert 0.1 in [abs(s) for s in reference.scale_steps], "the scale-step limit was not exercised"
    if config["clipping_scale"] is not None:
        assert min(reference.clip_factors) < 0.9, "clipping was not exercised"
    else:
        assert set(reference.clip_factors) == {1.0}


def test_multi_tensor_and_per_tensor_paths_agree():
    """foreach=True (torch's multi-tensor kernels, the GPU default) and foreach=False (the CPU default)."""
    config = {**CONFIG, "clipping_update_period": 12}
    grads_sequence = make_grads(make_params(), 30)
    multi, _ = run_ours(make_params(), grads_sequence, **config, foreach=True)
    single, _ = run_ours(make_params(), grads_sequence, **config, foreach=False)
    for a, b in zip(multi, single):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_update_is_invariant_to_the_loss_scale():
    """Summed (icefall) and normalised (ESPnet) losses differ by a constant factor on the gradients, which
    ScaledAdam's updates ignore up to eps (docs/scaled_adam_eden.md, "Learning rate")."""
    grads_sequence = make_grads(make_params(), 30)
    normalised, _ = run_ours(make_params(), grads_sequence, **CONFIG)
    summed, _ = run_ours(make_params(), [[g * 1000.0 for g in grads] for grads in grads_sequence], **CONFIG)
    for a, b in zip(normalised, summed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_plain_named_and_grouped_parameters_give_the_same_updates():
    """model.parameters(), model.named_parameters() and ESPnet's exclude_weight_decay groups (without clipping,
    which is per group) are the same algorithm."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    x, y = torch.randn(16, 3), torch.randn(16, 2)
    config = {**CONFIG, "clipping_scale": None}
    results = []
    for build in (
        lambda m: ScaledAdam(m.parameters(), **config),
        lambda m: ScaledAdam(m.named_parameters(), **config),
        lambda m: configure_optimizer(m, ScaledAdam, config, {}),
    ):
        replica = copy.deepcopy(model)
        optimizer = build(replica)
        for _ in range(12):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(replica(x), y).backward()
            optimizer.step()
        results.append((optimizer, [p.detach().clone() for p in replica.parameters()]))
    grouped = results[2][0]
    assert len(grouped.param_groups) == 2 and grouped.param_groups[1]["weight_decay"] == 0.0
    for _, params in results[1:]:
        for a, b in zip(results[0][1], params):
            assert torch.equal(a, b)


def test_resume_is_bit_identical():
    config = {**CONFIG, "clipping_update_period": 12}
    grads_sequence = make_grads(make_params(), 40)
    straight, _ = run_ours(make_params(), grads_sequence, **config)

    first, optimizer = run_ours(make_params(), grads_sequence[:20], **config)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    params = [torch.nn.Parameter(p.detach().clone()) for p in first]
    resumed = ScaledAdam(params, **config)
    resumed.load_state_dict(torch.load(buffer))
    for grads in grads_sequence[20:]:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        resumed.step()
    for a, b in zip(straight, params):
        assert torch.equal(a, b)


def test_parameters_without_gradient_are_untouched():
    frozen = torch.nn.Parameter(torch.ones(3, 3))
    trained = torch.nn.Parameter(torch.ones(3, 3))
    optimizer = ScaledAdam([frozen, trained])
    for _ in range(5):
        trained.grad = torch.randn(3, 3)
        optimizer.step()
    assert torch.equal(frozen, torch.ones(3, 3)) and "step" not in optimizer.state[frozen]
    assert optimizer.state[trained]["step"] == 5


def test_non_finite_gradient_does_not_break_the_parameters():
    params = [torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.tensor(0.5))]
    optimizer = ScaledAdam(params)
    for t in range(15):
        for p in params:
            p.grad = torch.randn_like(p)
        if t in (3, 12):  # before and after the clipping threshold exists
            params[0].grad[0, 0] = float("inf" if t == 3 else "nan")
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in params)


def test_tolerates_grad_scaler_skipping_steps():
    model = torch.nn.Linear(4, 1)
    optimizer = ScaledAdam(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    x = torch.randn(8, 4)
    for t in range(6):
        optimizer.zero_grad()
        scaler.scale(model(x).pow(2).mean() * (float("inf") if t == 2 else 1.0)).backward()
        scaler.step(optimizer)
        scaler.update()
    assert optimizer.state[model.weight]["step"] == 5
    assert torch.isfinite(model.weight).all()


def clipped_steps(max_norm, steps=10):
    """Run ``steps`` steps of a tiny model whose gradients are clipped like ESPnet's trainer does."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 8)
    optimizer = ScaledAdam(model.parameters())
    for _ in range(steps):
        optimizer.zero_grad()
        (model(torch.randn(4, 8) * 10).pow(2).sum()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_norm)
        optimizer.step()


def test_warns_at_first_step_on_espnet_default_grad_clip():
    with pytest.warns(ExternalClippingWarning, match="grad_clip: inf") as record:
        clipped_steps(5.0, steps=1)
    assert "ESPnet's default grad_clip" in str(record[0].message)


def test_warns_once_on_any_recurring_grad_clip():
    with pytest.warns(ExternalClippingWarning, match="capped at 1") as record:
        clipped_steps(1.0)
    assert len([w for w in record if w.category is ExternalClippingWarning]) == 1


def test_no_warning_without_clipping():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExternalClippingWarning)
        clipped_steps(float("inf"))


def test_heavy_clipping_log_names_the_dominant_parameter(caplog):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    optimizer = ScaledAdam(model.named_parameters(), clipping_update_period=10)
    for t in range(12):
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 0.01
        if t == 11:
            model[1].weight.grad.fill_(100.0)
        with caplog.at_level("WARNING", logger="hybrid_encoders.optim.scaled_adam"):
            optimizer.step()
    assert "largest contribution from 1.weight" in caplog.text


@pytest.mark.parametrize(
    "key, value",
    [
        ("lr", 0.0),
        ("lr", -0.01),
        ("betas", (1.0, 0.98)),
        ("betas", (0.9, -0.1)),
        ("clipping_scale", 0.0),
        ("clipping_scale", -2.0),
        ("eps", 0.0),
        ("scalar_lr_scale", -1.0),
        ("param_max_rms", 1e-6),
        ("size_update_period", 0),
        ("clipping_update_period", 2.5),
        ("foreach", "yes"),
    ],
)
def test_bad_hyperparameters_name_the_key(key, value):
    with pytest.raises(ValueError, match=key.split("[")[0]):
        ScaledAdam([torch.nn.Parameter(torch.ones(2))], **{key: value})


@pytest.mark.parametrize(
    "group, key", [({"weight_decay": 0.01}, "weight_decay"), ({"lr": -1.0}, "lr"), ({"momentum": 0.9}, "momentum")]
)
def test_bad_parameter_group_names_the_key(group, key):
    optimizer = ScaledAdam([torch.nn.Parameter(torch.ones(2))])
    with pytest.raises(ValueError, match=key):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], **group})


def train_toy(make_optimizer, make_scheduler, steps=300, steps_per_epoch=100):
    """Fit an MLP to a fixed random teacher and return the held-out MSE; schedulers are stepped like ESPnet's
    trainer does (``step()`` per optimizer step, ``step(value)`` per epoch).

    The student's layers start at very different weight scales (×4, ×1, ×0.05): the situation ScaledAdam is made
    for (updates relative to each tensor's RMS, Zipformer paper section "ScaledAdam"), where one Adam learning rate
    is too small for some tensors and too large for others.
    """
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4))
    student = torch.nn.Sequential(
        torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4)
    )
    with torch.no_grad():
        for layer, scale in zip(student[::2], (4.0, 1.0, 0.05)):
            layer.weight.mul_(scale)
    optimizer = make_optimizer(student.parameters())
    scheduler = make_scheduler(optimizer)
    for step in range(steps):
        x = torch.randn(32, 16)
        with torch.no_grad():
            y = teacher(x)
        loss = torch.nn.functional.mse_loss(student(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if (step + 1) % steps_per_epoch == 0 and isinstance(scheduler, Eden):
            scheduler.step(loss.item())
    x = torch.randn(1024, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.nn.functional.mse_loss(student(x), teacher(x)).item()


@pytest.fixture
def one_thread():
    """Tiny models run much faster on one thread on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_beats_adam_with_warmup_on_a_toy_problem(one_thread):
    """ScaledAdam+Eden with default settings against the best of four Adam learning rates with WarmupLR."""
    scaled = train_toy(ScaledAdam, lambda o: Eden(o, lr_batches=100, lr_epochs=2, warmup_batches=30))
    adam = min(
        train_toy(lambda p: torch.optim.Adam(p, lr=lr), lambda o: WarmupLR(o, warmup_steps=30))
        for lr in (1e-3, 3e-3, 1e-2, 3e-2)
    )
    assert scaled < 0.8 * adam
