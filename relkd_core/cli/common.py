"""Shared plumbing of the ``relkd-*`` commands: logging set-up and exit codes.

Exit codes: 0 success, 1 a failure while running (a :class:`RelkdError` with its message),
2 bad usage (argparse, or a bad argument found after parsing, such as an output path that
:func:`relkd_core.outputs.claim_output` refuses), 130 interrupted. Every expected error is one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from relkd_core.errors import OutputError, RelkdError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(RelkdError):
    """A command-line argument that parsed but cannot be used (exit code 2)."""


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a whole number, got {text!r}') from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def setup_logging(verbose: bool = False) -> None:
    """Configure the root logger once, at the entry point."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s', stream=sys.stderr)


def run(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int],
        argv: list[str] | None) -> int:
    """Parse ``argv`` and run ``body``, turning project errors into messages and exit codes."""
    args = parser.parse_args(argv)
    setup_logging(getattr(args, 'verbose', False))
    try:
        return body(args)
    except (UsageError, OutputError) as err:
        parser.print_usage(sys.stderr)
        print(f'{parser.prog}: error: {err}', file=sys.stderr)
        return EXIT_USAGE
    except RelkdError as err:
        print(f'{parser.prog}: error: {err}', file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f'{parser.prog}: interrupted; nothing partial was kept', file=sys.stderr)
        return EXIT_INTERRUPTED
