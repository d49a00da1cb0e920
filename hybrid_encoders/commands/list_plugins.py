"""``hybrid-encoders list``: what is registered into ESPnet, the class each name resolves to, and from where."""

import dataclasses
import importlib
import warnings
from typing import Dict, List

NAME = "list"
HELP = "list the entry-point plugins registered into ESPnet (name, registry, class it resolves to, distribution)"


def add_arguments(parser):
    parser.add_argument(
        "--all", action="store_true", help="one row per entry point, also those shadowed or skipped, with the reason"
    )


@dataclasses.dataclass
class Registration:
    """The registration outcomes of every entry point, and the task modules that could not be imported."""

    outcomes: List  # registration.Outcome, sorted by registry and name
    failed_imports: Dict[str, str]  # "espnet2.tasks.<task>" -> the error; its entry points were not registered


def collect_registration() -> Registration:
    """Import ``espnet2.tasks.abs_task`` and every ESPnet task module that some entry point targets.

    Raises:
        ImportError: ESPnet itself cannot be imported.
    """
    from hybrid_encoders import registration

    failed = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", registration.RegistrationWarning)
        for task in ["abs_task"] + registration.tasks_with_plugins():
            module_name = f"espnet2.tasks.{task}"
            try:
                importlib.import_module(module_name)
            except Exception as error:  # also HYBRID_ENCODERS_STRICT's RegistrationError
                if task == "abs_task" and isinstance(error, ImportError):
                    raise
                failed[module_name] = repr(error)
    return Registration(sorted(registration.OUTCOMES.values(), key=lambda o: (o.registry, o.name)), failed)


def format_table(rows, header):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def clash_lines(outcomes) -> List[str]:
    """One sentence per shadowed entry point: whose class the name resolves to instead, and the rule."""
    from hybrid_encoders.registration import CLASH_RULE

    return [
        f"'{o.name}' in {o.registry}: {o.distribution}'s {o.target} is shadowed; the name resolves to {o.resolved} "
        f"of {o.resolved_distribution} ({CLASH_RULE})."
        for o in outcomes
        if o.status == "shadowed"
    ]


def run(args):
    from hybrid_encoders import hook_installed

    try:
        found = collect_registration()
    except ImportError as error:
        print(f"error: ESPnet cannot be imported ({error!r}); install it: pip install espnet==202511")
        return 1
    outcomes = found.outcomes
    shown = [o for o in outcomes if args.all or o.status == "registered"]
    header = ("name", "registered into", "resolves to", "distribution")
    rows = [(o.name, o.registry, o.resolved or "-", o.distribution) for o in shown]
    if args.all:
        header += ("status", "reason")
        rows = [row + (o.status, o.reason) for row, o in zip(rows, shown)]
    print(format_table(rows, header))
    notes = clash_lines(outcomes)
    notes += [f"{module}: {error}; its entry points are not registered." for module, error in found.failed_imports.items()]
    skipped = [o for o in outcomes if o.status == "skipped"]
    if skipped and not args.all:
        notes.append(f"{len(skipped)} entry point(s) skipped; `hybrid-encoders list --all` shows why.")
    if not hook_installed():
        notes.append("the start-up hook is not active in this interpreter; run `hybrid-encoders doctor`.")
    if notes:
        print("\n" + "\n".join(f"note: {line}" for line in notes))
    return 0
