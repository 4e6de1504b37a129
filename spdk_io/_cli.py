"""What the command-line tools (``perf``, ``serve``) share: argument parsing that reports
a bad command line as one line on stderr and exit status 2, instead of argparse's exit."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

__all__ = ["Parser", "parse"]


class UsageError(Exception):
    """A command-line error found by argparse."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse(
    parser: argparse.ArgumentParser, argv: list[str] | None, tool: str
) -> argparse.Namespace | int:
    """The parsed arguments, or the exit status to return: 2 after printing
    ``"<tool>: <error> (see --help)"`` for a bad command line, 0 after ``--help``."""
    try:
        return parser.parse_args(argv)
    except UsageError as exc:
        print(f"{tool}: {exc} (see --help)", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
