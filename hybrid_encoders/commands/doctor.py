"""``hybrid-encoders doctor``: check the environment and say, for each problem, how to fix it."""

import dataclasses
import importlib
import importlib.metadata
import os
import site
import sys
import sysconfig
from typing import List

NAME = "doctor"
HELP = "check Python, torch, torchaudio and ESPnet versions, the registration hook and optional k2"

# The stack CI tests; requirements/tested.txt pins the same versions (a test keeps the two equal).
TESTED_VERSIONS = {"torch": "2.11.0", "torchaudio": "2.11.0", "espnet": "202511"}
MINIMUM_PYTHON = (3, 9)
PIN_COMMAND = "pip install torch==2.11.0 torchaudio==2.11.0 espnet==202511"


@dataclasses.dataclass
class Check:
    name: str
    status: str  # "ok", "note" (works, worth knowing) or "problem" (something will fail)
    detail: str
    fix: str = ""


def add_arguments(parser):
    parser.add_argument(
        "--quick", action="store_true", help="skip importing ESPnet's asr task (10-25 s) to prove registration end to end"
    )


def _version(distribution: str):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < MINIMUM_PYTHON:
        return Check("python", "problem", version, "use Python >= 3.9 (tested: 3.11)")
    return Check("python", "ok", version)


def _check_distribution(distribution: str, module: str) -> Check:
    installed = _version(distribution)
    if installed is None:
        return Check(distribution, "problem", "not installed", PIN_COMMAND)
    try:
        importlib.import_module(module)
    except Exception as error:  # a broken binary import is exactly what this command is for
        return Check(distribution, "problem", f"{installed} installed but `import {module}` fails: {error!r}", PIN_COMMAND)
    tested = TESTED_VERSIONS[distribution]
    if installed.split("+")[0] != tested:
        return Check(distribution, "note", f"{installed} (tested: {tested})", f"for the tested stack: {PIN_COMMAND}")
    return Check(distribution, "ok", installed)


def _startup_file_locations() -> List[str]:
    directories = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    if site.ENABLE_USER_SITE:
        directories.add(site.getusersitepackages())
    return sorted(os.path.join(d, "hybrid_encoders.pth") for d in directories if os.path.exists(os.path.join(d, "hybrid_encoders.pth")))


def _check_hook() -> Check:
    from hybrid_encoders._bootstrap import DISABLE_VARIABLE, _switch_is_on, hook_installed

    if _switch_is_on(DISABLE_VARIABLE):
        return Check("auto-registration", "problem", f"disabled by {DISABLE_VARIABLE}", f"unset {DISABLE_VARIABLE}")
    pth_files = _startup_file_locations()
    if not pth_files:
        return Check(
            "auto-registration",
            "problem",
            "hybrid_encoders.pth is not in this interpreter's site-packages (PYTHONPATH or --target install?)",
            "install with `pip install hybrid-encoders` (or `pip install -e .`), or `import hybrid_encoders` "
            "before ESPnet builds its parser",
        )
    if not hook_installed():
        return Check(
            "auto-registration",
            "problem",
            f"{pth_files[0]} exists but the hook is not active (python -S?)",
            "run without -S, or `import hybrid_encoders` first",
        )
    return Check("auto-registration", "ok", f"hook active ({pth_files[0]})")


def _check_registration() -> Check:
    from hybrid_encoders.commands.list_plugins import collect_outcomes

    try:
        outcomes = collect_outcomes()
    except ImportError as error:
        return Check("registration", "problem", f"an ESPnet task module cannot be imported: {error!r}", PIN_COMMAND)
    ours = [o for o in outcomes if o.distribution == "hybrid-encoders"]
    broken = [o for o in ours if o.status == "skipped"]
    if broken:
        return Check(
            "registration",
            "problem",
            "; ".join(f"{o.name}: {o.reason}" for o in broken),
            "reinstall hybrid-encoders; `hybrid-encoders list --all` shows every entry point",
        )
    others = [o for o in outcomes if o.distribution != "hybrid-encoders" and o.status == "skipped"]
    detail = f"{len(ours)} components registered into ESPnet"
    if others:
        names = ", ".join(f"{o.name} ({o.distribution}): {o.reason}" for o in others)
        return Check("registration", "note", f"{detail}; other plugins skipped: {names}", "see `hybrid-encoders list --all`")
    return Check("registration", "ok", detail)


def _check_optional(module: str, purpose: str, fix: str) -> Check:
    try:
        importlib.import_module(module)
    except Exception:
        return Check(module, "note", f"not importable ({purpose})", fix)
    return Check(module, "ok", f"{_version(module) or 'present'} ({purpose})")


def run_checks(quick: bool = False) -> List[Check]:
    checks = [
        _check_python(),
        _check_distribution("torch", "torch"),
        _check_distribution("torchaudio", "torchaudio"),
        _check_distribution("espnet", "espnet2"),
        _check_hook(),
    ]
    espnet_ok = checks[3].status != "problem"
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
        print(f"\nverdict: {len(problems)} problem(s); ESPnet will not see this package's components until fixed.")
        return 1
    print("\nverdict: OK, ESPnet sees this package's components.")
    return 0
