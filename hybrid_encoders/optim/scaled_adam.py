"""ScaledAdam: Adam whose update is proportional to each tensor's RMS, plus a learned tensor scale.

The optimizer of the Zipformer paper (Yao et al., "Zipformer: A faster and better encoder for automatic speech
recognition", ICLR 2024, section "ScaledAdam"), with the equations of icefall's ``zipformer/optim.py``. For one
parameter tensor ``θ`` with gradient ``g`` at (0-based) step ``t`` of that tensor:

1. Gradient clipping (whole group): ``g ← c·g`` with ``c = min(1, threshold / N)``, where
   ``N = sqrt(Σ_tensors ‖g · r‖²)`` weights each tensor by its RMS ``r`` (``scalar_lr_scale`` for one-element
   tensors) and ``threshold = clipping_scale · median(N over the last clipping_update_period steps)``; no clipping
   before the group's 10th step.
2. Adam's second moment, without first moment: ``v ← β2·v + (1−β2)·g²``, ``v̂ = v / (1−β2^(t+1))`` while that
   correction is below 0.99, ``Δ = −lr · g / (sqrt(v̂) + eps)``.
3. Scaling (tensors with more than one element): ``Δ ← Δ · max(r, param_min_rms)`` (paper: ``Δ'_t = −α_t·r_{t−1}·
   m_t/(sqrt(v_t)+ε)``); ``r`` is re-measured every ``size_update_period`` steps, and on those steps the tensor's
   scale is learned (paper: the explicit update of ``r``) from the accumulated ``Σ θ·g``:
   ``Δ ← Δ + θ · clamp(−lr·scalar_lr_scale·sqrt(bias_correction)·Σ_k s_k / (sqrt(ŝ)+eps), ±0.1)``, capped so that
   the RMS stays below ``param_max_rms``.
4. Momentum on the update (no bias correction): ``m ← β1·m + (1−β1)·Δ``; ``θ ← θ + m``. One-element tensors use
   ``lr·scalar_lr_scale`` in step 2, skip step 3, and are clamped to ``±scalar_max``.

icefall stacks same-shape tensors to launch fewer kernels. Here the same batching comes from torch's multi-tensor
(``torch._foreach_*``) kernels, which take all tensors of a group at once, whatever their shapes, without
copying parameters and gradients into stacks and back; they are the default on GPUs. On CPU, where kernel launches
are cheap and the multi-tensor kernels' whole-model temporaries cost page faults, the default is one tensor at a
time, as in torch's Adam (``foreach``). Per-tensor statistics (RMS, scale gradients) are always handled as vectors.
State is kept per tensor (``self.state[p]``), so checkpoints do not depend on how tensors are grouped.

ESPnet specifics: the trainer passes ``model.parameters()`` (no names) or parameter groups
(``exclude_weight_decay``); it skips the step itself on non-finite gradients; and it always calls
``clip_grad_norm_(max_norm=grad_clip)`` before ``step()``, which changes this algorithm unless ``grad_clip: inf``.
The optimizer warns (:class:`ExternalClippingWarning`) when gradients look clipped already; see
``docs/scaled_adam_eden.md``.
"""

import logging
import math
import warnings
from typing import Dict, List, Optional, Sequence

import torch

from hybrid_encoders.encoders.config import reject_unknown, require_positive, require_probability

NAME = "scaled_adam"
logger = logging.getLogger(__name__)

# The group step numbers at which an early clipping threshold is estimated, before the first full period.
_EARLY_THRESHOLD_STEPS = (10, 20, 40)
# ESPnet's default --grad_clip (espnet2/tasks/abs_task.py).
ESPNET_DEFAULT_GRAD_CLIP = 5.0
# How many first steps the optimizer watches for a gradient norm capped by someone else's clipping.
_CLIP_PROBE_STEPS = 10
# torch's clip_grad_norm_ leaves a norm of max_norm·n/(n+1e-6) plus float32 rounding: equal to 1e-4 relative.
_CLIP_RTOL = 1e-4


class ExternalClippingWarning(UserWarning):
    """The gradients reaching :class:`ScaledAdam` look clipped already (ESPnet's ``grad_clip`` not ``inf``)."""


class ScaledAdam(torch.optim.Optimizer):
    """Zipformer's ScaledAdam (see the module docstring for the equations), usable as ESPnet's ``optim: scaled_adam``.

    Args:
        params: an iterable of tensors (``model.parameters()``), of ``(name, tensor)`` pairs
            (``model.named_parameters()``), or of group dicts with ``params`` (or ``named_params``) and any
            hyper-parameter below. Names are used only in diagnostics. A group may carry ``weight_decay: 0.0``
            (ESPnet's ``exclude_weight_decay`` adds it); ScaledAdam has no weight decay, so other values are rejected.
        lr: learning rate (> 0); icefall's 0.045 assumes losses summed over ~1000 s batches, see the docs.
        betas: ``(β1, β2)``, both in [0, 1): momentum on the update, and the second-moment decay.
        scalar_lr_scale: factor on ``lr`` for one-element tensors and for learning tensor scales (> 0).
        eps: added to the RMS of gradients (> 0).
        param_min_rms: floor of the tensor RMS that scales the update (> 0).
        param_max_rms: the learned scale never takes a tensor's RMS above this (> param_min_rms).
        scalar_max: one-element tensors are clamped to ``[-scalar_max, scalar_max]`` (> 0).
        size_update_period: steps between re-measuring the tensor RMS and learning the scale (integer >= 1).
        clipping_update_period: steps between updates of the clipping threshold (integer >= 1).
        clipping_scale: clipping threshold as a multiple of the median recent gradient norm (> 0), or None for no
            clipping.
        foreach: True: torch's multi-tensor kernels (fewer kernel launches: fastest on GPUs); False: one tensor at a
            time (small temporaries: fastest on CPU); None: by device. Both compute the same.
    """

    def __init__(
        self,
        params,
        lr: float = 0.045,
        betas: Sequence[float] = (0.9, 0.98),
        scalar_lr_scale: float = 0.1,
        eps: float = 1.0e-8,
        param_min_rms: float = 1.0e-5,
        param_max_rms: float = 3.0,
        scalar_max: float = 10.0,
        size_update_period: int = 4,
        clipping_update_period: int = 100,
        clipping_scale: Optional[float] = 2.0,
        foreach: Optional[bool] = None,
    ):
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            scalar_lr_scale=scalar_lr_scale,
            eps=eps,
            param_min_rms=param_min_rms,
            param_max_rms=param_max_rms,
            scalar_max=scalar_max,
            size_update_period=size_update_period,
            clipping_update_period=clipping_update_period,
            clipping_scale=clipping_scale,
            foreach=foreach,
        )
        _check_hyperparameters(defaults)
        self.param_names: Dict[torch.Tensor, str] = {}
        self._probed_norms: List[float] = []
        self._external_clipping_reported = False
        super().__init__(self._split_names(params), defaults)

    def _split_names(self, params) -> List[dict]:
        """Turn named parameters into plain ones, remembering the names in :attr:`param_names`."""
        if isinstance(params, torch.Tensor):
            raise TypeError(f"{NAME}: params must be an iterable of tensors or of parameter groups, got one tensor")
        items = list(params)
        if items and not isinstance(items[0], dict):
            items = [{"params": items}]
        groups = []
        for group in items:
            group = dict(group)
            if "named_params" in group:
                if "params" in group:
                    raise ValueError(f"{NAME}: a parameter group has both 'params' and 'named_params'")
                group["params"] = list(group.pop("named_params"))
            plain = []
            for entry in group["params"]:
                if isinstance(entry, tuple):
                    name, entry = entry
                    self.param_names[entry] = name
                plain.append(entry)
            group["params"] = plain
            groups.append(group)
        return groups

    def add_param_group(self, param_group: dict) -> None:
        """Add a group after checking its hyper-parameters (ESPnet adds groups for ``exclude_weight_decay``)."""
        (param_group,) = self._split_names([param_group])
        reject_unknown(NAME, set(param_group) - set(self.defaults) - {"params", "weight_decay"}, self.defaults)
        if param_group.get("weight_decay", 0.0) != 0.0:
            raise ValueError(
                f"{NAME}: weight_decay must be 0 (ScaledAdam has no weight decay; param_max_rms bounds the "
                f"parameter scale instead), got {param_group['weight_decay']!r}"
            )
        _check_hyperparameters({**self.defaults, **param_group})
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; parameters whose ``grad`` is None are left alone.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss.

        Returns:
            the closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        batches = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError(f"{NAME} does not support sparse gradients")
            grads = [p.grad for p in params]
            batches.append((group, params, grads, _norms(grads)))
        self._watch_for_external_clipping([norms for _, _, _, norms in batches if norms.numel()])
        for group, params, grads, grad_norms in batches:
            if params:
                self._step_group(group, params, grads, grad_norms)
        return loss

    def _step_group(self, group: dict, params: List[torch.Tensor], grads: List[torch.Tensor], grad_norms: torch.Tensor):
        """Update one group's parameters (all with gradients); ``grad_norms`` (n,) holds each gradient's L2 norm."""
        for p in params:
            if "step" not in self.state[p]:
                self._init_state(p, group)
        clip = self._clipping_factor(group, params, grad_norms)
        if clip == 0.0:
            # Non-finite gradient norm: update with zero gradients (as icefall), since 0·inf would be NaN.
            grads = [torch.zeros_like(g) for g in grads]
            clip = 1.0
        # Tensors of one cohort share the per-tensor step count (bias corrections, scale-learning period), dtype and
        # device, so they can go through the same multi-tensor kernels; normally a group is one or two cohorts.
        cohorts: Dict[tuple, List[int]] = {}
        for index, p in enumerate(params):
            key = (p.numel() == 1, self.state[p]["step"], p.dtype, p.device)
            cohorts.setdefault(key, []).append(index)
        for (is_scalar, step, _, _), indices in cohorts.items():
            cohort_params = [params[i] for i in indices]
            cohort_grads = [grads[i] for i in indices]
            if is_scalar:
                self._scalar_update(group, cohort_params, cohort_grads, step, clip)
            else:
                self._tensor_update(group, cohort_params, cohort_grads, step, clip)
            for p in cohort_params:
                self.state[p]["step"] = step + 1

    def _init_state(self, p: torch.Tensor, group: dict):
        state = self.state[p]
        state["step"] = 0
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)  # the momentum of updates
        if p.numel() > 1:
            state["param_rms"] = _rms([p])[0]
            state["scale_grads"] = p.new_zeros(group["size_update_period"])
            state["scale_exp_avg_sq"] = p.new_zeros(())

    def _update(self, group: dict, params, grads, step: int, clip: float, factors: List[float], scale_step=None):
        """Steps 2 and 4 for one cohort (tensors at the same ``step``), in place:

        ``v ← β2·v + (1−β2)·(clip·g)²``; ``m ← β1·m + (1−β1)·(factor·g / (sqrt(v̂) + eps) + scale_step·θ)``;
        ``θ ← θ + m``.

        Args:
            factors: per tensor, ``-lr·clip`` times the tensor's clamped RMS (``scalar_lr_scale`` for scalars).
            scale_step: per tensor, the relative scale change of step 3, or None.
        """
        beta1, beta2 = group["betas"]
        eps = group["eps"]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
        momenta = [self.state[p]["delta"] for p in params]
        bias_correction = 1 - beta2 ** (step + 1)
        # icefall drops the correction once it is close to 1.
        inverse_root = 1 / math.sqrt(bias_correction) if bias_correction < 0.99 else 1.0
        gradient_weights = [(1 - beta1) * factor for factor in factors]
        scale_weights = None if scale_step is None else [(1 - beta1) * size for size in scale_step]
        if not _use_foreach(group, params):
            # One tensor at a time, like torch's Adam on CPU: temporaries stay small and are reused.
            for index, (p, g, v, m) in enumerate(zip(params, grads, exp_avg_sqs, momenta)):
                v.mul_(beta2).addcmul_(g, g, value=(1 - beta2) * clip * clip)
                denominator = v.sqrt()
                if inverse_root != 1.0:
                    denominator.mul_(inverse_root)
                m.mul_(beta1)
                if scale_weights is not None:
                    m.add_(p, alpha=scale_weights[index])
                m.addcdiv_(g, denominator.add_(eps), value=gradient_weights[index])
                p.add_(m)
            return
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=(1 - beta2) * clip * clip)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        if inverse_root != 1.0:
            torch._foreach_mul_(denominators, inverse_root)
        torch._foreach_add_(denominators, eps)
        torch._foreach_mul_(momenta, beta1)
        if scale_weights is not None:
            for m, p, weight in zip(momenta, params, scale_weights):
                m.add_(p, alpha=weight)
        torch._foreach_addcdiv_(momenta, grads, denominators, gradient_weights)
        torch._foreach_add_(params, momenta)

    def _scalar_update(self, group: dict, params, grads, step: int, clip: float):
        """Steps 2 and 4 for one-element tensors, with ``lr·scalar_lr_scale``; then clamp to ``±scalar_max``."""
        factor = -group["lr"] * group["scalar_lr_scale"] * clip
        self._update(group, params, grads, step, clip, [factor] * len(params))
        torch._foreach_clamp_min_(params, -group["scalar_max"])
        torch._foreach_clamp_max_(params, group["scalar_max"])

    def _tensor_update(self, group: dict, params, grads, step: int, clip: float):
        """Steps 2 to 4 for tensors with more than one element, all at the same per-tensor ``step``."""
        states = [self.state[p] for p in params]
        period = group["size_update_period"]
        # Σ θ·g is the gradient w.r.t. the tensor's log-scale; a period of them drives the scale step.
        scale_grads = torch.stack([s["scale_grads"] for s in states])  # (n, period)
        dots = torch.stack([torch.dot(p.reshape(-1), g.reshape(-1)) for p, g in zip(params, grads)])
        scale_grads[:, step % period] = clip * dots
        if step % period == period - 1:
            param_rms = torch.stack(_rms(params))
        else:
            param_rms = torch.stack([s["param_rms"] for s in states])
        scale_step = None
        if step % period == period - 1 and step > 0:
            scale_step = self._scale_step(group, states, scale_grads, param_rms, step).tolist()
        factors = (-group["lr"] * clip * param_rms.clamp(min=group["param_min_rms"])).tolist()
        self._update(group, params, grads, step, clip, factors, scale_step)
        torch._foreach_copy_([s["scale_grads"] for s in states], list(scale_grads.unbind(0)))
        torch._foreach_copy_([s["param_rms"] for s in states], list(param_rms.unbind(0)))

    def _scale_step(self, group: dict, states, scale_grads, param_rms, step: int) -> torch.Tensor:
        """Relative change of each tensor's scale (step 3's scale learning), shape (n,).

        Args:
            states: the tensors' optimizer states (their ``scale_exp_avg_sq`` is updated).
            scale_grads: (n, size_update_period) the last period's ``Σ θ·g`` per tensor.
            param_rms: (n,) the RMS just measured.
        """
        period = group["size_update_period"]
        beta2 = group["betas"][1] ** period  # the decay per period, not per step
        exp_avg_sq = torch.stack([s["scale_exp_avg_sq"] for s in states])
        exp_avg_sq.mul_(beta2).add_((scale_grads**2).mean(dim=1), alpha=1 - beta2)
        torch._foreach_copy_([s["scale_exp_avg_sq"] for s in states], list(exp_avg_sq.unbind(0)))
        bias_correction = 1 - beta2 ** ((step + 1) // period)
        # As in icefall, sqrt(bias_correction) multiplies the step (a slower start), unlike Adam's correction.
        size_lr = group["lr"] * group["scalar_lr_scale"] * bias_correction**0.5
        scale_step = -size_lr * scale_grads.sum(dim=1) / (exp_avg_sq.sqrt() + group["eps"])
        scale_step.masked_fill_(param_rms < group["param_min_rms"], 0.0)  # never shrink a tiny tensor further
        scale_step.clamp_(min=-0.1, max=0.1)
        return torch.minimum(scale_step, (group["param_max_rms"] - param_rms) / param_rms)

    def _clipping_factor(self, group: dict, params: List[torch.Tensor], grad_norms: torch.Tensor) -> float:
        """Step 1's factor ``c <= 1`` for this group (0 for a non-finite gradient norm).

        The group's clipping state lives in the state of its first parameter, under ``"clipping"``.
        """
        state = self.state[group["params"][0]]
        if "clipping" not in state:
            period = group["clipping_update_period"]
            state["clipping"] = {"step": 0, "norms": grad_norms.new_zeros(period), "threshold": None, "num_clipped": 0}
        clipping = state["clipping"]
        step = clipping["step"]
        clipping["step"] = step + 1
        if group["clipping_scale"] is None or step == 0:
            return 1.0
        weights = grad_norms.new_tensor(
            [group["scalar_lr_scale"] if p.numel() == 1 else 0.0 for p in params]
        )
        tensor_indices = [i for i, p in enumerate(params) if p.numel() > 1]
        if tensor_indices:
            rms = torch.stack([self.state[params[i]]["param_rms"].to(grad_norms.dtype) for i in tensor_indices])
            weights[tensor_indices] = rms
        contributions = grad_norms * weights
        total_norm = contributions.norm()
        norms = clipping["norms"]
        norms[step % norms.numel()] = total_norm
        early = step in _EARLY_THRESHOLD_STEPS and step < norms.numel()
        if step % norms.numel() == 0 or early:
            self._update_threshold(group, clipping, norms.sort().values[-step:] if early else norms.sort().values)
        norm = total_norm.item()
        if not math.isfinite(norm):
            return 0.0
        if clipping["threshold"] is None:
            return 1.0
        factor = min(1.0, clipping["threshold"] / (norm + 1.0e-20))
        if factor < 1.0:
            clipping["num_clipped"] += 1
        if factor < 0.5:
            logger.warning(
                "%s: scaling gradients by %.3g (threshold %.3e); largest contribution from %s",
                NAME,
                factor,
                clipping["threshold"],
                self._describe(params[int(contributions.argmax())], group),
            )
        return factor

    def _update_threshold(self, group: dict, clipping: dict, ordered: torch.Tensor):
        """Set ``threshold = clipping_scale · median`` of the recent total gradient norms and log their quartiles.

        Args:
            ordered: the recent norms in ascending order: the last period's, or, on the early steps (10, 20, 40),
                only those of the steps so far; there the threshold is doubled, as the norm is still changing fast.
                A non-finite median keeps the previous threshold.
        """
        count = ordered.numel()
        early = count < clipping["norms"].numel()
        quartiles = [ordered[min(count - 1, (count // 4) * k)].item() for k in range(5)]
        median = quartiles[2]
        percent_clipped = 100.0 * clipping["num_clipped"] / count
        clipping["num_clipped"] = 0
        if not math.isfinite(median):
            logger.warning(
                "%s: median gradient norm is not finite; keeping the clipping threshold %s", NAME, clipping["threshold"]
            )
            return
        clipping["threshold"] = group["clipping_scale"] * median * (2.0 if early else 1.0)
        logger.info(
            "%s: clipping_scale=%s, grad-norm quartiles %s, threshold=%.3e, percent-clipped=%.1f",
            NAME,
            group["clipping_scale"],
            " ".join(f"{q:.3e}" for q in quartiles),
            clipping["threshold"],
            percent_clipped,
        )

    def _describe(self, p: torch.Tensor, group: dict) -> str:
        if p in self.param_names:
            return self.param_names[p]
        index = next(i for i, q in enumerate(group["params"]) if q is p)
        group_index = next(i for i, g in enumerate(self.param_groups) if g is group)
        return f"params[{index}] of group {group_index} (shape {tuple(p.shape)})"

    def _watch_for_external_clipping(self, grad_norms: List[torch.Tensor]):
        """Warn once if the gradients were clipped before ``step()`` (ESPnet's ``grad_clip`` was not ``inf``).

        The optimizer cannot see the trainer's options, so it looks at the total gradient L2 norm (the norm ESPnet
        clips) over its first steps. Clipping leaves that norm at exactly ``max_norm``:

        * on the first step, a norm equal to ESPnet's default ``grad_clip`` (5.0) is reported at once;
        * for any other ``grad_clip``, the largest norm of the first ``_CLIP_PROBE_STEPS`` steps recurring on at
          least 3 of them is reported: unclipped norms of different batches do not repeat to 1e-4.
        """
        if self._external_clipping_reported or len(self._probed_norms) >= _CLIP_PROBE_STEPS or not grad_norms:
            return
        total = torch.cat(grad_norms).norm().item()
        self._probed_norms.append(total)
        cap = max(self._probed_norms)
        if len(self._probed_norms) == 1 and math.isclose(total, ESPNET_DEFAULT_GRAD_CLIP, rel_tol=_CLIP_RTOL):
            evidence = f"the first step's gradient norm is {total:.6g}, ESPnet's default grad_clip"
        elif cap > 0 and sum(math.isclose(n, cap, rel_tol=_CLIP_RTOL) for n in self._probed_norms) >= 3:
            evidence = f"the gradient norm was capped at {cap:.6g} on several of the first steps"
        else:
            return
        self._external_clipping_reported = True
        warnings.warn(
            f"{NAME}: {evidence}; the gradients look clipped before the optimizer step (ESPnet's grad_clip). "
            "ScaledAdam clips gradients itself (clipping_scale); a second clipping changes the algorithm. "
            "Set 'grad_clip: inf' in the training config (see docs/scaled_adam_eden.md).",
            ExternalClippingWarning,
            stacklevel=3,
        )


def _use_foreach(group: dict, params: List[torch.Tensor]) -> bool:
    """The group's ``foreach`` choice; by default multi-tensor kernels on accelerators, a loop on CPU (as torch.optim)."""
    if group["foreach"] is not None:
        return group["foreach"]
    return all(p.device.type != "cpu" for p in params)


def _norms(tensors: List[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each tensor, shape (n,), in float32 (float64 if any tensor is float64)."""
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    if not tensors:
        return torch.zeros(0, dtype=dtype)
    return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype))


def _rms(tensors: List[torch.Tensor]) -> List[torch.Tensor]:
    """Root mean square of each tensor, as 0-dim tensors."""
    return [n / math.sqrt(t.numel()) for n, t in zip(torch._foreach_norm(tensors), tensors)]


def _check_hyperparameters(config: dict) -> None:
    """Raise a ValueError naming the first invalid hyper-parameter of a (merged) group configuration."""
    require_positive(NAME, "lr", config["lr"])
    betas = config["betas"]
    if len(betas) != 2:
        raise ValueError(f"{NAME}: betas must be a pair (beta1, beta2), got {betas!r}")
    require_probability(NAME, "betas[0]", betas[0])
    require_probability(NAME, "betas[1]", betas[1])
    for key in ("scalar_lr_scale", "eps", "param_min_rms", "scalar_max"):
        require_positive(NAME, key, config[key])
    if not config["param_max_rms"] > config["param_min_rms"]:
        raise ValueError(
            f"{NAME}: param_max_rms must be > param_min_rms={config['param_min_rms']}, got {config['param_max_rms']!r}"
        )
    for key in ("size_update_period", "clipping_update_period"):
        if isinstance(config[key], bool) or not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"{NAME}: {key} must be an integer >= 1, got {config[key]!r}")
    if config["clipping_scale"] is not None:
        require_positive(NAME, "clipping_scale", config["clipping_scale"])
    if config["foreach"] not in (None, True, False):
        raise ValueError(f"{NAME}: foreach must be true, false or null, got {config['foreach']!r}")
