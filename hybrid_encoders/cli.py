"""The ``hybrid-encoders`` command. Each sub-command is a module in :mod:`hybrid_encoders.commands` that defines
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; adding a module adds a sub-command."""

import argparse
import importlib
import pkgutil
import sys
from typing import List, Optional

import hybrid_encoders.commands


def _command_modules():
    modules = []
    for info in pkgutil.iter_modules(hybrid_encoders.commands.__path__):
        modules.append(importlib.import_module(f"hybrid_encoders.commands.{info.name}"))
    return sorted(modules, key=lambda module: module.NAME)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybrid-encoders",
        description="Squeezeformer, HybridFormer and Zipformer for ESPnet: inspect the installation and run tools.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {hybrid_encoders.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _command_modules():
        command_parser = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
        command_parser.set_defaults(run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
