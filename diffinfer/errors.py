"""Exceptions raised on bad input.

Every error names the problem and, where there is one, the fix. They subclass the
built-in exception a user would expect (``ValueError`` for bad values, ``FileNotFoundError``
for missing files) so that generic ``except`` clauses keep working.
"""

from __future__ import annotations


class DiffinferError(Exception):
    """Base class of all errors raised by diffinfer on bad input or bad files."""


class InputError(DiffinferError, ValueError):
    """An argument has the wrong shape, type, range or contains non-finite values."""


class OutsidePriorError(InputError):
    """A parameter vector lies outside the prior box."""


class DataFileError(DiffinferError, OSError):
    """A data file is missing, truncated or inconsistent with its companion files."""


class LocateError(RuntimeError):
    """A locator could not find the posterior (the grid falls back to the adaptive one)."""
