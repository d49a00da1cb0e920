"""Register entry-point plugins into ESPnet's choice registries.

The public contract (documented in README.md): a distribution declares entry points in

* ``espnet2.<task>.<choice>`` (``espnet2.asr.encoder``, ``espnet2.asr.model``, ``espnet2.st.encoder``, ...):
  added to the ``ClassChoices`` named ``<choice>`` of ``espnet2.tasks.<task>``; the class must subclass that
  choice's base type (``AbsEncoder``, ``AbsDecoder``, ...; for ``espnet2.asr.model``: ``ESPnetASRModel``);
* ``espnet2.optimizers``: added to ``espnet2.tasks.abs_task.optim_classes``; must subclass ``torch.optim.Optimizer``;
* ``espnet2.schedulers``: added to ``espnet2.tasks.abs_task.scheduler_classes``; must subclass ``AbsScheduler``.

Rules: names are lower case; an ESPnet built-in (or a name another plugin took first) is never overridden;
re-registration of the same class is a no-op (re-import, ``importlib.reload``); a broken entry point warns and is
skipped, unless ``HYBRID_ENCODERS_STRICT`` is set, which turns every such warning into a
:class:`RegistrationError`. ``HYBRID_ENCODERS_DEBUG`` prints each registration.

This module is imported lazily by :mod:`hybrid_encoders._bootstrap`, i.e. only once ESPnet is being imported.
"""

import dataclasses
import importlib.metadata
import sys
import warnings
from typing import Dict, List, Optional, Tuple

from hybrid_encoders._bootstrap import STRICT_VARIABLE, _switch_is_on

GROUP_PREFIX = "espnet2."
OPTIMIZER_GROUP = "espnet2.optimizers"
SCHEDULER_GROUP = "espnet2.schedulers"
DEBUG_VARIABLE = "HYBRID_ENCODERS_DEBUG"
_RESERVED_NAMES = ("none", "null", "nil")


class RegistrationError(RuntimeError):
    """Raised instead of a :class:`RegistrationWarning` when ``HYBRID_ENCODERS_STRICT`` is set."""


class RegistrationWarning(RuntimeWarning):
    """An entry point that could not be registered; the message names it and says what to do."""


@dataclasses.dataclass
class Outcome:
    """What happened to one entry point: ``status`` is ``registered``, ``already registered`` or ``skipped``."""

    group: str
    name: str
    target: str  # "module:attr" as declared
    distribution: str
    registry: str  # e.g. "espnet2.tasks.asr encoder" or "espnet2.tasks.abs_task optim_classes"
    status: str
    reason: str = ""


OUTCOMES: Dict[Tuple[str, str, str], Outcome] = {}
_entry_points_cache: Optional[List[importlib.metadata.EntryPoint]] = None


def plugin_entry_points() -> List[importlib.metadata.EntryPoint]:
    """Every installed entry point whose group starts with ``espnet2.`` (read once per process)."""
    global _entry_points_cache
    if _entry_points_cache is None:
        found = {}
        for dist in importlib.metadata.distributions():
            for entry_point in dist.entry_points:
                if entry_point.group.startswith(GROUP_PREFIX):
                    # The same distribution can be visible twice on sys.path; keep its first occurrence.
                    found.setdefault((entry_point.group, entry_point.name, entry_point.value), entry_point)
        _entry_points_cache = sorted(found.values(), key=lambda ep: (ep.group, ep.name))
    return _entry_points_cache


def forget_entry_points():
    """Drop the cached entry-point list (after installing a distribution in a running process)."""
    global _entry_points_cache
    _entry_points_cache = None


def _distribution_name(entry_point) -> str:
    dist = getattr(entry_point, "dist", None)
    return dist.metadata["Name"] if dist is not None else "<unknown distribution>"


def _problem(message: str):
    if _switch_is_on(STRICT_VARIABLE):
        raise RegistrationError(message)
    warnings.warn(message, RegistrationWarning, stacklevel=3)


def _record(entry_point, registry: str, status: str, reason: str = "") -> Outcome:
    outcome = Outcome(
        group=entry_point.group,
        name=entry_point.name,
        target=entry_point.value,
        distribution=_distribution_name(entry_point),
        registry=registry,
        status=status,
        reason=reason,
    )
    OUTCOMES[(entry_point.group, entry_point.name, registry)] = outcome
    return outcome


def _register(classes: dict, entry_point, base_type: type, registry: str):
    """Add one entry point to ``classes`` (a ``{name: class}`` dict of ESPnet's), following the rules above."""
    label = f"entry point '{entry_point.name} = {entry_point.value}' in group '{entry_point.group}' " f"(distribution {_distribution_name(entry_point)})"
    name = entry_point.name
    if name != name.lower():
        _record(entry_point, registry, "skipped", "name is not lower case")
        return _problem(
            f"{label}: ESPnet looks choices up by their exact lower-case name, so '{name}' could never be selected; "
            f"declare it as '{name.lower()}'. Skipped."
        )
    if name in _RESERVED_NAMES:
        _record(entry_point, registry, "skipped", "reserved name")
        return _problem(f"{label}: '{name}' means 'no choice' to ESPnet; pick another name. Skipped.")
    try:
        cls = entry_point.load()
    except Exception as error:
        _record(entry_point, registry, "skipped", f"failed to load: {error!r}")
        return _problem(f"{label}: failed to load ({error!r}); fix or uninstall that distribution. Skipped.")
    if not isinstance(cls, type) or not issubclass(cls, base_type):
        _record(entry_point, registry, "skipped", f"not a subclass of {base_type.__name__}")
        return _problem(
            f"{label}: {cls!r} is not a subclass of {base_type.__module__}.{base_type.__qualname__}, "
            f"which {registry} requires. Skipped."
        )
    existing = classes.get(name)
    if existing is cls:
        _record(entry_point, registry, "registered")
        return None
    if existing is not None:
        owner = next((o for o in OUTCOMES.values() if o.registry == registry and o.name == name and o.status == "registered"), None)
        holder = f"plugin {owner.target} ({owner.distribution})" if owner else f"built-in {existing.__module__}.{existing.__qualname__}"
        _record(entry_point, registry, "skipped", f"name taken by {holder}")
        return _problem(f"{label}: '{name}' is already taken by {holder} in {registry}; never overridden, choose another name. Skipped.")
    classes[name] = cls
    _record(entry_point, registry, "registered")
    if _switch_is_on(DEBUG_VARIABLE):
        sys.stderr.write(f"[hybrid-encoders] registered {name} -> {cls.__module__}.{cls.__qualname__} into {registry}\n")
    return None


def _apply_to_abs_task(module):
    import torch

    from espnet2.schedulers.abs_scheduler import (
        AbsBatchStepScheduler,
        AbsEpochStepScheduler,
        AbsScheduler,
    )

    for entry_point in plugin_entry_points():
        if entry_point.group == OPTIMIZER_GROUP:
            _register(module.optim_classes, entry_point, torch.optim.Optimizer, f"{module.__name__} optim_classes")
        elif entry_point.group == SCHEDULER_GROUP:
            _register(module.scheduler_classes, entry_point, AbsScheduler, f"{module.__name__} scheduler_classes")
            cls = module.scheduler_classes.get(entry_point.name)
            if cls is not None and not issubclass(cls, (AbsBatchStepScheduler, AbsEpochStepScheduler)):
                _problem(
                    f"scheduler '{entry_point.name}' ({entry_point.value}) subclasses neither AbsBatchStepScheduler nor "
                    "AbsEpochStepScheduler: ESPnet's trainer would build it and never step it."
                )


def _task_classes(module):
    """The task classes (with ``class_choices_list``) defined in a task module."""
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and obj.__module__ == module.__name__ and hasattr(obj, "class_choices_list")
    ]


def _required_base(task: str, choices) -> type:
    if task == "asr" and choices.name == "model":
        # ASRTask.build_model is type-checked to return an ESPnetASRModel; a looser class would only fail later.
        from espnet2.asr.espnet_model import ESPnetASRModel

        return ESPnetASRModel
    return choices.base_type


def _apply_to_task(module):
    task = module.__name__.rsplit(".", 1)[1]
    prefix = f"{GROUP_PREFIX}{task}."
    wanted = [ep for ep in plugin_entry_points() if ep.group.startswith(prefix)]
    if not wanted:
        return
    choice_lists = [choices for task_class in _task_classes(module) for choices in task_class.class_choices_list]
    known = {choices.name for choices in choice_lists}
    for choices in {id(c): c for c in choice_lists}.values():
        group = prefix + choices.name
        for entry_point in wanted:
            if entry_point.group == group:
                _register(choices.classes, entry_point, _required_base(task, choices), f"{module.__name__} {choices.name}")
    for entry_point in wanted:
        choice = entry_point.group[len(prefix) :]
        if choice not in known:
            _record(entry_point, f"{module.__name__} ?", "skipped", f"task '{task}' has no choice '{choice}'")
            _problem(
                f"entry point '{entry_point.name} = {entry_point.value}' (distribution {_distribution_name(entry_point)}): "
                f"group '{entry_point.group}' names no choice of task '{task}'; valid groups are "
                + ", ".join(sorted(prefix + name for name in known))
                + "."
            )


def apply(module):
    """Register every matching entry point into a freshly imported ``espnet2.tasks.<task>`` module."""
    if module.__name__ == "espnet2.tasks.abs_task":
        _apply_to_abs_task(module)
    else:
        _apply_to_task(module)


def tasks_with_plugins() -> List[str]:
    """Names of the ESPnet tasks that some installed entry point targets (``asr``, ``st``, ...)."""
    tasks = set()
    for entry_point in plugin_entry_points():
        if entry_point.group not in (OPTIMIZER_GROUP, SCHEDULER_GROUP):
            tasks.add(entry_point.group[len(GROUP_PREFIX) :].split(".", 1)[0])
    return sorted(tasks)


__all__ = [
    "OUTCOMES",
    "Outcome",
    "RegistrationError",
    "RegistrationWarning",
    "apply",
    "forget_entry_points",
    "plugin_entry_points",
    "tasks_with_plugins",
]
