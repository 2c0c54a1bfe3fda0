"""The `hola` command. Each subcommand lives in its own module under tools/commands/ with
NAME, HELP, add_arguments(parser) and run(args) -> exit code; tools/commands/__init__.py lists them.

Only the chosen command's module is imported: `hola --help` reads every module's NAME and HELP
from its source, so listing the commands costs no torch import, and a command whose
dependencies are broken does not take the others down with it.

Exit codes: what the command returns (0 success, 1 a failed check or build), 2 for bad input
(one line on stderr naming the argument, what was given and what was expected), 70 for an
internal error (a bug: the traceback, then one line with the command line to report), 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from tools.commands import COMMANDS

EXIT_USAGE = 2
EXIT_INTERNAL = 70          # sysexits.h EX_SOFTWARE
EXIT_INTERRUPTED = 130

# What bad input raises, by the project's convention (ValueError/TypeError naming the argument,
# OSError naming the path). Anything else reaching main() is a bug.
INPUT_ERRORS = (ValueError, TypeError, OSError)


class UsageError(Exception):
    """A command line argparse rejected; the message is the whole line to print."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors raised as one line for main() to print, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see `{self.prog} --help`)")


def command_summary(module_name: str) -> tuple[str, str]:
    """(NAME, HELP) of tools/commands/<module_name>.py, read from its source without importing
    it (the modules import torch, which alone takes a second)."""
    spec = importlib.util.find_spec(f"tools.commands.{module_name}")
    tree = ast.parse(Path(spec.origin).read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("NAME", "HELP"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    return found["NAME"], found["HELP"]


def _chosen(argv: Sequence[str]) -> Optional[str]:
    """The subcommand named on the command line (the top level takes no options but --help)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The `hola` parser; only ``command``'s module is imported and given its arguments."""
    parser = _Parser(
        prog="hola",
        description="hola-dsl: hybrid-memory linear attention kernels (Gated DeltaNet plus an exact "
                    "KV cache), written once in a tile DSL. Run `hola COMMAND --help` for each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS:
        name, help_text = command_summary(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(f"tools.commands.{module_name}")
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (the first line of a multi-line one, which names the
    argument by convention; HOLA_DEBUG=1 shows the rest with the traceback)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text + (" (...)" if len(lines) > 1 else "")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(_chosen(argv))
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    prog = f"hola {args.command}"
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except INPUT_ERRORS as exc:
        if os.environ.get("HOLA_DEBUG"):
            traceback.print_exc()
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - a bug: show it whole, then say so
        traceback.print_exc()
        print(f"{prog}: internal error ({type(exc).__name__}: {_one_line(exc)}); this is a bug in hola, "
              f"not in your input: please report it with the command line `hola {' '.join(argv)}`",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
