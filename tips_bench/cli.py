"""The ``tips-bench`` command line: one module per group of subcommands registers its parsers; this one
builds the parser, dispatches, and turns input errors into one line and exit status 2. No logic lives here."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from tips_bench import __version__
from tips_bench.cli_args import Parser
from tips_bench.errors import TipsBenchError

#: Modules whose ``register(sub)`` adds subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = ("tips_bench.cli_backbones", "tips_bench.cli_features", "tips_bench.cli_commands",
                   "tips_bench.cli_cache", "tips_bench.cli_fetch", "tips_bench.cli_pretrain")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="tips-bench",
        description="Evaluate frozen vision and vision-language backbones the way the TIPS papers do.",
    )
    parser.add_argument("--version", action="version", version=f"tips-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


_PYTHON_SHOWWARNING = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """tips-bench's own warnings as one line, without Python's source path and code line; others unchanged."""
    if Path(__file__).parent not in Path(filename).resolve().parents:
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)
        return
    print(f"tips-bench: warning: {' '.join(str(message).split())}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            args = parser.parse_args(argv or ["run"])  # no arguments: the built-in synthetic suite
            return int(args.func(args) or 0)
    except TipsBenchError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message quotes (YAML errors, paths)
        print(f"tips-bench: error: {message.removeprefix('tips-bench: ')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tips-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
