"""Checks of scalar arguments and options, in one place.

Every public function and the command line validate their numbers with these helpers, so
that a bad value gets one kind of message everywhere: the name of the argument, the value
given and what is expected. They raise :class:`~diffinfer.errors.InputError` (a
``ValueError``).
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

from diffinfer.errors import InputError

if TYPE_CHECKING:
    import torch


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "finite"


def _scalar(value: object) -> object:
    """A 0-d numpy or torch value as a Python scalar (other values unchanged)."""
    if hasattr(value, "ndim") and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


def check_int(
    name: str,
    value: object,
    *,
    low: int | None = None,
    high: int | None = None,
    what: str = "",
) -> int:
    """``value`` as an int, checked to be an integer in ``[low, high]``.

    Floats with an integral value (``8.0``) are accepted; bools, strings, NaN and
    fractional values are not.

    Raises
    ------
    InputError
        Not an integer, or out of range; the message names ``name`` and the range.
    """
    value = _scalar(value)
    expected = f"an integer {_range_text(low, high, False, False)}".replace(" finite", "")
    if what:
        expected += f" ({what})"
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok and isinstance(value, numbers.Real) and not isinstance(value, bool):
        ok = math.isfinite(float(value)) and float(value) == int(value)
    if not ok:
        raise InputError(f"{name} must be {expected}, got {value!r}")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        raise InputError(f"{name} must be {expected}, got {v}")
    return v


def check_float(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    what: str = "",
) -> float:
    """``value`` as a finite float in the given (open or closed) range.

    Raises
    ------
    InputError
        Not a real number, NaN/inf, or out of range; the message names ``name``.
    """
    value = _scalar(value)
    expected = f"a number {_range_text(low, high, low_open, high_open)}".replace(
        "a number finite", "a finite number"
    )
    if what:
        expected += f" ({what})"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be {expected}, got {value!r}")
    v = float(value)
    bad = not math.isfinite(v)
    if low is not None:
        bad |= v <= low if low_open else v < low
    if high is not None:
        bad |= v >= high if high_open else v > high
    if bad:
        raise InputError(f"{name} must be {expected}, got {v!r}")
    return v


def check_choice(name: str, value: object, choices: tuple | list) -> object:
    """``value`` if it is one of ``choices``; else an error listing them."""
    try:
        ok = value in choices
    except TypeError:  # unhashable or incomparable
        ok = False
    if not ok:
        raise InputError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is True or False (not merely truthy; numpy and torch booleans count)."""
    value = _scalar(value)
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return value


def check_device(name: str, value: object) -> torch.device:
    """``value`` as a :class:`torch.device` that exists on this machine.

    Accepts ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (N below the number of CUDA devices),
    ``"mps"`` where Apple's Metal backend is available, and :class:`torch.device` objects
    of those kinds.

    Raises
    ------
    InputError
        Not a device name, a kind of device other than these, or a device this machine
        does not have; the message names ``name`` and the devices available here.
    """
    import torch

    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    available = ["cpu"]
    if n_cuda:
        available += ["cuda", *(f"cuda:{i}" for i in range(n_cuda))]
    if has_mps:
        available.append("mps")
    expected = f"'cpu', 'cuda', 'cuda:N' or 'mps' (available here: {available})"
    device = None
    if isinstance(value, torch.device):
        device = value
    elif isinstance(value, str):
        try:
            device = torch.device(value.strip())
        except (RuntimeError, ValueError):
            device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"{name} must be {expected}, got {value!r}")
    if device.type == "cuda":
        if not n_cuda:
            raise InputError(
                f"{name} is {value!r}, but CUDA is not available on this machine; use --device cpu"
            )
        if device.index is not None and device.index >= n_cuda:
            raise InputError(
                f"{name} is {value!r}, but this machine has {n_cuda} CUDA device(s): "
                f"{available[2:]}"
            )
    if device.type == "mps" and not has_mps:
        raise InputError(
            f"{name} is {value!r}, but MPS is not available on this machine; use --device cpu"
        )
    return device
