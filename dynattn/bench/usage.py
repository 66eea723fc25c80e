"""What every dynattn command line shares: a mistake in it (:class:`UsageError`), a parser that reports
one in one line, and :func:`run_command`, which prints a user's mistake as ``dynattn: error: ...`` and exits
with status 2. Here, below both :mod:`dynattn.cli` and the benchmark commands, so that each uses them
without importing the other."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..errors import DynattnError

__all__ = ["UsageError", "CommandParser", "run_command"]


class UsageError(Exception):
    """A mistake in the command line: reported in one line, exit status 2."""


class CommandParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2 (argparse's own usage dump is noise)
        raise UsageError(f"{message} (see: {self.prog} --help)")


def run_command(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
                argv: Sequence[str]) -> int:
    """Parse ``argv`` and ``run`` it; the exit status (a user's mistake: one line on stderr, 2)."""
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help and --version: printed, return their status
            return int(done.code or 0)
        return run(args)
    except (UsageError, DynattnError, TypeError) as exc:
        print(f"dynattn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dynattn: interrupted", file=sys.stderr)
        return 130
