"""Running the command line: parse, dispatch, and turn expected failures into one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from diffinfer.cli.parser import build_parser
from diffinfer.errors import DiffinferError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Every expected failure (bad input, unreadable or unwritable files, a device that is not
    there, an interrupt) prints one line ``diffinfer: error: ...`` and returns 2 (130 for an
    interrupt); ``--debug`` shows the traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    parser = build_parser()
    args = parser.parse_args(argv)
    import warnings

    default_format = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None) -> str:
        """diffinfer's own warnings (Monte Carlo error, goodness of fit, calibration) as
        one line each, as its errors are; others as Python writes them."""
        if category.__module__.startswith("diffinfer"):
            return f"diffinfer: warning: {message}\n"
        return default_format(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        return _run(args, debug)
    finally:
        warnings.formatwarning = default_format


def _run(args: argparse.Namespace, debug: bool) -> int:
    """The command of ``args``, its expected failures as one line (see :func:`main`)."""
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into a reader that stopped (e.g. head)
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        if debug:
            raise
        print("diffinfer: interrupted (calibrate, simulate and train --resume continue from "
              "what was finished)", file=sys.stderr)  # fmt: skip
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"diffinfer: error: {_describe(exc)}", file=sys.stderr)
        if not isinstance(exc, (DiffinferError, OSError, ValueError, RuntimeError)):
            print("diffinfer: this looks like a bug; rerun with --debug and report the "
                  "traceback", file=sys.stderr)  # fmt: skip
        return 2


def _describe(exc: BaseException) -> str:
    """One line for an exception: the project's own message, or the kind and message of an
    error raised by the system or a library (file, device, memory)."""
    if isinstance(exc, DiffinferError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
