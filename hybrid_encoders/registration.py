"""Register entry-point plugins into ESPnet's choice registries.

The public contract (documented in README.md): a distribution declares entry points in

* ``espnet2.<task>.<choice>`` (``espnet2.asr.encoder``, ``espnet2.asr.model``, ``espnet2.st.encoder``, ...):
  added to the ``ClassChoices`` named ``<choice>`` of ``espnet2.tasks.<task>``; the class must subclass that
  choice's base type (``AbsEncoder``, ``AbsDecoder``, ...; for ``espnet2.asr.model``: ``ESPnetASRModel``);
* ``espnet2.optimizers``: added to ``espnet2.tasks.abs_task.optim_classes``; must subclass ``torch.optim.Optimizer``;
* ``espnet2.schedulers``: added to ``espnet2.tasks.abs_task.scheduler_classes``; must subclass ``AbsScheduler``.

Rules:

* names are lower case; an ESPnet built-in is never overridden;
* when several distributions declare one name in one registry, the name goes to the first of them in
  ``HYBRID_ENCODERS_PREFER`` (comma-separated distribution names), else to the one whose normalised name sorts first;
  where the winner fails to load, the next one is tried. Nothing depends on ``sys.path`` order. The others are
  "shadowed": not loaded, reported in one warning naming every distribution and class involved;
* a broken entry point (fails to load, even by calling ``sys.exit``; wrong base type; bad name) is skipped;
* warnings are given after every entry point of the task module is registered, so a warnings filter that turns them
  into errors (``PYTHONWARNINGS=error``) stops nothing: such a warning is printed to stderr instead.
  ``HYBRID_ENCODERS_STRICT`` turns the problems into one :class:`RegistrationError`, again after registration;
* re-registration of the same class is a no-op (re-import, ``importlib.reload``). ``HYBRID_ENCODERS_DEBUG`` prints
  each registration.

This module is imported lazily by :mod:`hybrid_encoders._bootstrap`, i.e. only once ESPnet is being imported.
"""

import dataclasses
import importlib.metadata
import os
import re
import sys
import warnings
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

from hybrid_encoders._bootstrap import STRICT_VARIABLE, _switch_is_on

GROUP_PREFIX = "espnet2."
OPTIMIZER_GROUP = "espnet2.optimizers"
SCHEDULER_GROUP = "espnet2.schedulers"
DEBUG_VARIABLE = "HYBRID_ENCODERS_DEBUG"
PREFER_VARIABLE = "HYBRID_ENCODERS_PREFER"
CLASH_RULE = (
    f"a name declared by several distributions goes to the first of them listed in {PREFER_VARIABLE} "
    "(comma-separated), else to the one whose name sorts first"
)
_RESERVED_NAMES = ("none", "null", "nil")


class RegistrationError(RuntimeError):
    """Raised after registration, instead of the warnings, when ``HYBRID_ENCODERS_STRICT`` is set."""


class RegistrationWarning(RuntimeWarning):
    """An entry point that could not be registered, or a name clash; the message names them and says what to do."""


@dataclasses.dataclass
class Outcome:
    """What happened to one entry point in one registry.

    ``status`` is ``registered`` (ESPnet resolves the name to this entry point's class), ``shadowed`` (another
    distribution's entry point won the name by the clash rule; not loaded) or ``skipped`` (built-in name, broken
    entry point). ``resolved`` is the class the name resolves to in that registry afterwards (``module.Class``;
    empty when none), ``resolved_distribution`` where it comes from (``espnet`` for a built-in).
    """

    group: str
    name: str
    target: str  # "module:attr" as declared
    distribution: str
    registry: str  # e.g. "espnet2.tasks.asr encoder" or "espnet2.tasks.abs_task optim_classes"
    status: str
    reason: str = ""
    resolved: str = ""
    resolved_distribution: str = ""


@dataclasses.dataclass(frozen=True)
class PluginEntryPoint:
    """One installed entry point and the distribution that declares it (Python 3.9's EntryPoint has no ``.dist``)."""

    group: str
    name: str
    value: str  # "module:attr"
    distribution: str  # as the distribution's metadata spells it
    entry_point: importlib.metadata.EntryPoint

    def load(self):
        return self.entry_point.load()


OUTCOMES: Dict[Tuple[str, str, str, str], Outcome] = {}
# class -> the outcome of the entry point that put it into a registry: tells plugin classes from ESPnet's built-ins
# in registries that ESPnet copies from another task's (enh_s2t deep-copies asr's, st's and diar's choices).
_PLUGIN_CLASSES: Dict[type, Outcome] = {}
_entry_points_cache: Optional[List[PluginEntryPoint]] = None


def normalize_distribution(name: str) -> str:
    """PEP 503 normalisation: ``Hybrid_Encoders`` -> ``hybrid-encoders``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def plugin_entry_points() -> List[PluginEntryPoint]:
    """Every installed entry point whose group starts with ``espnet2.`` (read once per process)."""
    global _entry_points_cache
    if _entry_points_cache is None:
        found = {}
        for dist in importlib.metadata.distributions():
            name = dist.metadata["Name"]
            for entry_point in dist.entry_points:
                if entry_point.group.startswith(GROUP_PREFIX):
                    plugin = PluginEntryPoint(entry_point.group, entry_point.name, entry_point.value, name, entry_point)
                    # The same distribution can be visible twice on sys.path; keep its first occurrence.
                    key = (plugin.group, plugin.name, plugin.value, normalize_distribution(name))
                    found.setdefault(key, plugin)
        _entry_points_cache = sorted(found.values(), key=lambda ep: (ep.group, ep.name, ep.distribution))
    return _entry_points_cache


def forget_entry_points():
    """Drop the cached entry-point list (after installing a distribution in a running process)."""
    global _entry_points_cache
    _entry_points_cache = None


def preferred_distributions() -> List[str]:
    """The normalised distribution names of ``HYBRID_ENCODERS_PREFER``, in order."""
    return [normalize_distribution(n.strip()) for n in os.environ.get(PREFER_VARIABLE, "").split(",") if n.strip()]


def _preference(entry_point) -> tuple:
    """Sort key of the clash rule: listed in HYBRID_ENCODERS_PREFER first (in its order), then by name."""
    prefer = preferred_distributions()
    dist = normalize_distribution(entry_point.distribution)
    return (prefer.index(dist) if dist in prefer else len(prefer), dist, entry_point.value)


def _label(entry_point) -> str:
    return (
        f"entry point '{entry_point.name} = {entry_point.value}' in group '{entry_point.group}' "
        f"(distribution {entry_point.distribution})"
    )


def _qualified(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _record(entry_point, registry: str, status: str, reason: str = "", resolved: str = "", resolved_dist: str = ""):
    outcome = Outcome(
        group=entry_point.group,
        name=entry_point.name,
        target=entry_point.value,
        distribution=entry_point.distribution,
        registry=registry,
        status=status,
        reason=reason,
        resolved=resolved,
        resolved_distribution=resolved_dist,
    )
    OUTCOMES[(registry, entry_point.name, outcome.distribution, entry_point.value)] = outcome
    return outcome


def _load(entry_point, base_type: type, registry: str, problems: List[str]):
    """The entry point's class, or None after recording why it cannot be registered."""
    name = entry_point.name
    label = _label(entry_point)
    if name != name.lower():
        _record(entry_point, registry, "skipped", "name is not lower case")
        problems.append(
            f"{label}: ESPnet looks choices up by their exact lower-case name, so '{name}' could never be selected; "
            f"declare it as '{name.lower()}'. Skipped."
        )
        return None
    if name in _RESERVED_NAMES:
        _record(entry_point, registry, "skipped", "reserved name")
        problems.append(f"{label}: '{name}' means 'no choice' to ESPnet; pick another name. Skipped.")
        return None
    try:
        cls = entry_point.load()
    except (Exception, SystemExit) as error:  # a plugin's sys.exit() on import must not end ESPnet's start-up
        _record(entry_point, registry, "skipped", f"failed to load: {error!r}")
        problems.append(f"{label}: failed to load ({error!r}); fix or uninstall that distribution. Skipped.")
        return None
    if not isinstance(cls, type) or not issubclass(cls, base_type):
        _record(entry_point, registry, "skipped", f"not a subclass of {base_type.__name__}")
        problems.append(
            f"{label}: {cls!r} is not a subclass of {_qualified(base_type)}, which {registry} requires. Skipped."
        )
        return None
    return cls


def _register_name(classes: dict, name: str, candidates: list, base_type: type, registry: str, problems: List[str]):
    """Resolve one name of one registry (``classes``, a ``{name: class}`` dict of ESPnet's) by the rules above."""
    existing = classes.get(name)
    if existing is not None and existing not in _PLUGIN_CLASSES:
        builtin = _qualified(existing)
        for entry_point in candidates:
            _record(entry_point, registry, "skipped", f"name taken by ESPnet's built-in {builtin}", builtin, "espnet")
            problems.append(
                f"{_label(entry_point)}: '{name}' is ESPnet's built-in {builtin} in {registry}, which is never "
                "overridden; choose another name. Skipped."
            )
        return
    winner = None  # (target, distribution, class) the name resolves to
    if existing is not None:  # a plugin's class already: this registry is a copy of another task's, or re-applied
        owner = _PLUGIN_CLASSES[existing]
        winner = (owner.target, owner.distribution, existing)
    shadowed = []
    for entry_point in sorted(candidates, key=_preference):
        if winner is None:
            cls = _load(entry_point, base_type, registry, problems)
            if cls is None:
                continue
            classes[name] = cls
            winner = (entry_point.value, entry_point.distribution, cls)
            outcome = _record(entry_point, registry, "registered", "", _qualified(cls), winner[1])
            _PLUGIN_CLASSES.setdefault(cls, outcome)
            if _switch_is_on(DEBUG_VARIABLE):
                sys.stderr.write(f"[hybrid-encoders] registered {name} -> {_qualified(cls)} into {registry}\n")
            continue
        target, distribution, cls = winner
        if entry_point.value == target:
            _record(entry_point, registry, "registered", "", _qualified(cls), distribution)
            continue
        previous = OUTCOMES.get((registry, name, entry_point.distribution, entry_point.value))
        if previous is not None and previous.status == "skipped":  # re-applied: keep why it failed the first time
            continue
        _record(entry_point, registry, "shadowed", f"'{name}' resolves to {target} of {distribution} (clash rule)",
                _qualified(cls), distribution)
        shadowed.append(entry_point)
    if shadowed:
        target, distribution, _ = winner
        others = ", ".join(f"{ep.distribution} ({ep.value})" for ep in shadowed)
        problems.append(
            f"name clash in {registry}: '{name}' is declared by {distribution} ({target}) and by {others}. "
            f"ESPnet uses {distribution}'s: {CLASH_RULE}. To use another, set {PREFER_VARIABLE} to its distribution "
            f"name, e.g. {PREFER_VARIABLE}={shadowed[0].distribution}."
        )


def _register_group(classes: dict, entry_points: list, base_type: type, registry: str, problems: List[str]):
    by_name = defaultdict(list)
    for entry_point in entry_points:
        by_name[entry_point.name].append(entry_point)
    for name in sorted(by_name):
        _register_name(classes, name, by_name[name], base_type, registry, problems)


def _apply_to_abs_task(module, problems: List[str]):
    import torch

    from espnet2.schedulers.abs_scheduler import (
        AbsBatchStepScheduler,
        AbsEpochStepScheduler,
        AbsScheduler,
    )

    entry_points = plugin_entry_points()
    _register_group(
        module.optim_classes,
        [ep for ep in entry_points if ep.group == OPTIMIZER_GROUP],
        torch.optim.Optimizer,
        f"{module.__name__} optim_classes",
        problems,
    )
    schedulers = [ep for ep in entry_points if ep.group == SCHEDULER_GROUP]
    _register_group(module.scheduler_classes, schedulers, AbsScheduler, f"{module.__name__} scheduler_classes", problems)
    for name in sorted({ep.name for ep in schedulers}):
        cls = module.scheduler_classes.get(name)
        if cls in _PLUGIN_CLASSES and not issubclass(cls, (AbsBatchStepScheduler, AbsEpochStepScheduler)):
            problems.append(
                f"scheduler '{name}' ({_qualified(cls)}) subclasses neither AbsBatchStepScheduler nor "
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


def _apply_to_task(module, problems: List[str]):
    task = module.__name__.rsplit(".", 1)[1]
    prefix = f"{GROUP_PREFIX}{task}."
    wanted = [ep for ep in plugin_entry_points() if ep.group.startswith(prefix)]
    if not wanted:
        return
    choice_lists = [choices for task_class in _task_classes(module) for choices in task_class.class_choices_list]
    known = {choices.name for choices in choice_lists}
    for choices in {id(c): c for c in choice_lists}.values():
        group = prefix + choices.name
        entry_points = [ep for ep in wanted if ep.group == group]
        registry = f"{module.__name__} {choices.name}"
        _register_group(choices.classes, entry_points, _required_base(task, choices), registry, problems)
    for entry_point in wanted:
        choice = entry_point.group[len(prefix) :]
        if choice not in known:
            _record(entry_point, f"{module.__name__} ?", "skipped", f"task '{task}' has no choice '{choice}'")
            problems.append(
                f"{_label(entry_point)}: group '{entry_point.group}' names no choice of task '{task}'; valid groups "
                "are " + ", ".join(sorted(prefix + name for name in known)) + "."
            )


def _report(problems: List[str]):
    """Give the collected problems as warnings (or, with HYBRID_ENCODERS_STRICT, as one RegistrationError)."""
    if not problems:
        return
    if _switch_is_on(STRICT_VARIABLE):
        raise RegistrationError("\n".join(problems))
    for message in problems:
        try:
            warnings.warn(message, RegistrationWarning, stacklevel=3)
        except RegistrationWarning:
            # A warnings filter made it an error (e.g. PYTHONWARNINGS=error). Everything is registered already;
            # say it without ending ESPnet's import (HYBRID_ENCODERS_STRICT is the switch for failing).
            sys.stderr.write(f"[hybrid-encoders] RegistrationWarning: {message}\n")


def apply(module):
    """Register every matching entry point into a freshly imported ``espnet2.tasks.<task>`` module."""
    problems: List[str] = []
    if module.__name__ == "espnet2.tasks.abs_task":
        _apply_to_abs_task(module, problems)
    else:
        _apply_to_task(module, problems)
    _report(problems)


def tasks_with_plugins() -> List[str]:
    """Names of the ESPnet tasks that some installed entry point targets (``asr``, ``st``, ...)."""
    tasks = set()
    for entry_point in plugin_entry_points():
        if entry_point.group not in (OPTIMIZER_GROUP, SCHEDULER_GROUP):
            tasks.add(entry_point.group[len(GROUP_PREFIX) :].split(".", 1)[0])
    return sorted(tasks)


__all__ = [
    "CLASH_RULE",
    "OUTCOMES",
    "Outcome",
    "PREFER_VARIABLE",
    "RegistrationError",
    "RegistrationWarning",
    "apply",
    "forget_entry_points",
    "normalize_distribution",
    "plugin_entry_points",
    "preferred_distributions",
    "tasks_with_plugins",
]
