"""What every dynattn command line shares: a mistake in it (:class:`UsageError`), a parser that reports
one in one line, and :func:`run_command`, which prints a user's mistake as ``dynattn: error: ...`` (wrapped to 80
columns) and exits with status 2. Here, below both :mod:`dynattn.cli` and the benchmark commands, so that each uses them
without importing the other."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Sequence

from ..errors import DynattnError

__all__ = ["UsageError", "CommandParser", "run_command", "error_text"]


class UsageError(Exception):
    """A mistake in the command line: reported in one line, exit status 2."""


class CommandParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2 (argparse's own usage dump is noise)
        raise UsageError(f"{message} (see: {self.prog} --help)")


def error_text(exc: BaseException, width: int = 80) -> str:
    """``dynattn: error: <message>``, wrapped at spaces to ``width`` columns (a terminal's), later lines indented:
    a message that lists what is allowed runs to hundreds of characters."""
    lines = f"dynattn: error: {exc}".splitlines() or [""]
    return "\n".join(textwrap.fill(line, width, initial_indent="" if i == 0 else "  ", subsequent_indent="  ",
                                   break_long_words=False, break_on_hyphens=False) for i, line in enumerate(lines))


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
        print(error_text(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dynattn: interrupted", file=sys.stderr)
        return 130
