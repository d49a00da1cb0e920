"""``hybrid-encoders doctor``: check the environment and say, for each problem, how to fix it."""

import dataclasses
import importlib
import importlib.metadata
import os
import re
import site
import sys
import sysconfig
from typing import List

NAME = "doctor"
HELP = "check Python, pip, torch, torchaudio and ESPnet versions, the registration hook and optional k2"

# The stack CI tests; requirements/tested.txt pins the same versions (a test keeps the two equal).
TESTED_VERSIONS = {"torch": "2.11.0", "torchaudio": "2.11.0", "espnet": "202511"}
MINIMUM_PYTHON = (3, 9)
PIN_COMMAND = "pip install torch==2.11.0 torchaudio==2.11.0 espnet==202511"
OUR_DISTRIBUTION = "hybrid-encoders"
# pip 25 and newer refuse distributions from PyPI that declare direct URL dependencies, and espnet's dependency ci_sdr
# declares one (padertorch @ git+..., in an extra), so `pip install espnet` fails with them (README.md, "Install").
FIRST_REFUSING_PIP = 25


@dataclasses.dataclass
class Check:
    name: str
    status: str  # "ok", "note" (works, worth knowing) or "problem" (something will fail)
    detail: str
    fix: str = ""
    impact: str = ""  # for a problem: what fails because of it (the verdict lists these)


def add_arguments(parser):
    parser.add_argument(
        "--quick", action="store_true", help="skip importing ESPnet's asr task (10-25 s) to prove registration end to end"
    )


def _version(distribution: str):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _pip_refuses_espnet() -> bool:
    pip = _version("pip")
    return pip is not None and int(re.match(r"\d*", pip).group() or 0) >= FIRST_REFUSING_PIP


def install_command() -> str:
    """The command that installs the tested stack with this environment's pip."""
    if _pip_refuses_espnet():
        return f"python -m pip install 'pip<{FIRST_REFUSING_PIP}' && {PIN_COMMAND}   (README.md, Install)"
    return PIN_COMMAND


def _check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < MINIMUM_PYTHON:
        return Check("python", "problem", version, "use Python >= 3.9 (tested: 3.11)", "this package needs it")
    return Check("python", "ok", version)


def _check_pip() -> Check:
    pip = _version("pip")
    if pip is None:
        return Check("pip", "note", "not installed in this environment (installs go through another installer)")
    if not _pip_refuses_espnet():
        return Check("pip", "ok", pip)
    detail = (
        f"{pip}: pip >= {FIRST_REFUSING_PIP} refuses espnet's dependency ci_sdr (\"Distributions from PyPI cannot "
        "declare direct URL dependencies\")"
    )
    fix = f"python -m pip install 'pip<{FIRST_REFUSING_PIP}' (or install ci_sdr from its sdist file: README.md, Install)"
    if _version("espnet") is None:
        return Check("pip", "problem", detail, fix, "`pip install espnet` (and of this package with its dependencies) fails")
    return Check("pip", "note", f"{detail}; what is installed works, but reinstalling or upgrading espnet fails", fix)


def _check_distribution(distribution: str, module: str) -> Check:
    installed = _version(distribution)
    impact = "ESPnet cannot run"
    if installed is None:
        return Check(distribution, "problem", "not installed", install_command(), impact)
    try:
        importlib.import_module(module)
    except Exception as error:  # a broken binary import is exactly what this command is for
        detail = f"{installed} installed but `import {module}` fails: {error!r}"
        return Check(distribution, "problem", detail, install_command(), impact)
    tested = TESTED_VERSIONS[distribution]
    if installed.split("+")[0] != tested:
        return Check(distribution, "note", f"{installed} (tested: {tested})", f"for the tested stack: {install_command()}")
    return Check(distribution, "ok", installed)


def _startup_file_locations() -> List[str]:
    directories = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    if site.ENABLE_USER_SITE:
        directories.add(site.getusersitepackages())
    return sorted(os.path.join(d, "hybrid_encoders.pth") for d in directories if os.path.exists(os.path.join(d, "hybrid_encoders.pth")))


def _check_hook() -> Check:
    from hybrid_encoders._bootstrap import DISABLE_VARIABLE, _switch_is_on, hook_installed

    impact = "ESPnet's commands (and asr.sh) will not see this package's components"
    if _switch_is_on(DISABLE_VARIABLE):
        return Check("auto-registration", "problem", f"disabled by {DISABLE_VARIABLE}", f"unset {DISABLE_VARIABLE}", impact)
    pth_files = _startup_file_locations()
    if not pth_files:
        return Check(
            "auto-registration",
            "problem",
            "hybrid_encoders.pth is not in this interpreter's site-packages (PYTHONPATH or --target install?)",
            "install the package into this environment (README.md, Install), or `import hybrid_encoders` "
            "before ESPnet builds its parser",
            impact,
        )
    if not hook_installed():
        return Check(
            "auto-registration",
            "problem",
            f"{pth_files[0]} exists but the hook is not active (python -S?)",
            "run without -S, or `import hybrid_encoders` first",
            impact,
        )
    return Check("auto-registration", "ok", f"hook active ({pth_files[0]})")


def _ours(outcome) -> bool:
    from hybrid_encoders.registration import normalize_distribution

    return normalize_distribution(outcome.distribution) == OUR_DISTRIBUTION


def _check_registration() -> Check:
    """Which of this package's entry points ESPnet resolves to this package's classes, and why not the others."""
    from hybrid_encoders.commands.list_plugins import collect_registration
    from hybrid_encoders.registration import (
        PREFER_VARIABLE,
        normalize_distribution,
        plugin_entry_points,
        preferred_distributions,
    )

    try:
        found = collect_registration()
    except ImportError as error:
        detail = f"ESPnet's task modules cannot be imported: {error!r}"
        return Check("registration", "problem", detail, install_command(), "ESPnet cannot run")
    declared = [ep for ep in plugin_entry_points() if _ours(ep)]
    registered = [o for o in found.outcomes if _ours(o) and o.status == "registered"]
    missing, fixes, deliberate = [], [], True
    for outcome in (o for o in found.outcomes if _ours(o) and o.status != "registered"):
        missing.append(f"{outcome.name} ({outcome.registry}: {outcome.reason})")
        if outcome.status == "shadowed":
            deliberate &= normalize_distribution(outcome.resolved_distribution) in preferred_distributions()
            fixes.append(f"set {PREFER_VARIABLE}={OUR_DISTRIBUTION}, or uninstall {outcome.resolved_distribution}")
        else:
            deliberate = False
            fixes.append("reinstall hybrid-encoders (`hybrid-encoders list --all` says why each entry point failed)")
    for module, error in found.failed_imports.items():
        task = module.rsplit(".", 1)[1]
        names = [ep.name for ep in declared if ep.group.startswith(f"espnet2.{task}.")]
        if names:
            deliberate = False
            missing.append(f"{', '.join(names)} ({module} cannot be imported: {error})")
            fixes.append(f"make `import {module}` work: {install_command()}")
    tasks = sorted({o.registry.split()[0].rsplit(".", 1)[1] for o in registered})
    summary = f"{len(registered)} of {len(declared)} entry points of {OUR_DISTRIBUTION} registered ({', '.join(tasks)})"
    others = [o for o in found.outcomes if not _ours(o) and o.status != "registered"]
    notes = "; other plugins: " + "; ".join(f"{o.name} ({o.distribution}): {o.reason}" for o in others) if others else ""
    if not missing:
        if others:
            return Check("registration", "note", summary + notes, "see `hybrid-encoders list --all`")
        return Check("registration", "ok", summary)
    impact = f"ESPnet sees {len(registered)} of this package's {len(declared)} entry points; not: " + "; ".join(missing)
    if deliberate:  # every missing one lost a clash to a distribution the user preferred
        return Check("registration", "note", f"{summary}; by {PREFER_VARIABLE}: " + "; ".join(missing) + notes)
    return Check("registration", "problem", summary + notes, "; ".join(dict.fromkeys(fixes)), impact)


def _check_optional(module: str, purpose: str, fix: str) -> Check:
    try:
        importlib.import_module(module)
    except Exception:
        return Check(module, "note", f"not importable ({purpose})", fix)
    return Check(module, "ok", f"{_version(module) or 'present'} ({purpose})")


def run_checks(quick: bool = False) -> List[Check]:
    checks = [
        _check_python(),
        _check_pip(),
        _check_distribution("torch", "torch"),
        _check_distribution("torchaudio", "torchaudio"),
        _check_distribution("espnet", "espnet2"),
        _check_hook(),
    ]
    espnet_ok = all(c.status != "problem" for c in checks if c.name in ("torch", "espnet"))
    if not quick and espnet_ok:
        checks.append(_check_registration())
    checks += [
        _check_optional("k2", "optional: pruned RNN-T falls back to our PyTorch implementation", ""),
        _check_optional("tensorboard", "ESPnet's trainer imports it unless use_tensorboard: false", "pip install tensorboard"),
        _check_optional("matplotlib", "ESPnet's trainer plots unless use_matplotlib: false", "pip install matplotlib"),
    ]
    return checks


def run(args):
    checks = run_checks(quick=args.quick)
    marks = {"ok": "ok     ", "note": "note   ", "problem": "PROBLEM"}
    for check in checks:
        print(f"[{marks[check.status]}] {check.name}: {check.detail}")
        if check.fix and check.status != "ok":
            print(f"          fix: {check.fix}")
    problems = [c for c in checks if c.status == "problem"]
    if problems:
        print(f"\nverdict: {len(problems)} problem(s):")
        for check in problems:
            print(f"  - {check.name}: {check.impact}")
        return 1
    registration = next((c for c in checks if c.name == "registration"), None)
    if registration is None:
        print("\nverdict: OK; the registration hook is active (registration itself not checked: --quick).")
    else:
        print(f"\nverdict: OK: {registration.detail}.")
    return 0
