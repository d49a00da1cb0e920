"""``hybrid-encoders list``: what is registered into ESPnet, where, and from which distribution."""

import importlib
import warnings

NAME = "list"
HELP = "list the entry-point plugins registered into ESPnet (task, choice, class, distribution, status)"


def add_arguments(parser):
    parser.add_argument("--all", action="store_true", help="also show entry points that were skipped, with the reason")


def collect_outcomes():
    """Import every ESPnet task module that some entry point targets and return the registration outcomes.

    Raises:
        ImportError: ESPnet (or one of the task modules) cannot be imported.
    """
    from hybrid_encoders import registration

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", registration.RegistrationWarning)
        for module_name in ["espnet2.tasks.abs_task"] + [f"espnet2.tasks.{t}" for t in registration.tasks_with_plugins()]:
            importlib.import_module(module_name)
    return sorted(registration.OUTCOMES.values(), key=lambda o: (o.registry, o.name))


def format_table(rows, header):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def run(args):
    from hybrid_encoders import hook_installed

    try:
        outcomes = collect_outcomes()
    except ImportError as error:
        print(f"error: ESPnet cannot be imported ({error!r}); install it: pip install espnet==202511")
        return 1
    shown = [o for o in outcomes if args.all or o.status == "registered"]
    header = ("name", "registered into", "class", "distribution")
    rows = [(o.name, o.registry, o.target, o.distribution) for o in shown]
    if args.all:
        header += ("status", "reason")
        rows = [row + (o.status, o.reason) for row, o in zip(rows, shown)]
    print(format_table(rows, header))
    skipped = [o for o in outcomes if o.status == "skipped"]
    if skipped and not args.all:
        print(f"\n{len(skipped)} entry point(s) skipped; `hybrid-encoders list --all` shows why.")
    if not hook_installed():
        print("\nnote: the start-up hook is not active in this interpreter; run `hybrid-encoders doctor`.")
    return 0
