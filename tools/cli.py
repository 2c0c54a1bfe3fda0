"""The `hola` command. Each subcommand lives in its own module under tools/commands/ with
NAME, HELP, add_arguments(parser) and run(args) -> exit code; tools/commands/__init__.py lists them."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from tools.commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hola",
        description="hola-dsl: hybrid-memory linear attention kernels (Gated DeltaNet plus an exact "
                    "KV cache), written once in a tile DSL. Run `hola COMMAND --help` for each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS:
        module = importlib.import_module(f"tools.commands.{module_name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"hola {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
