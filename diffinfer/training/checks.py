"""Checks of single training-configuration values: each takes the key's dotted name and the
value, and returns the value in its canonical type or raises an InputError naming the key."""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable

from diffinfer.errors import InputError
from diffinfer.fields.transform import Transform
from diffinfer.parameters import PARAM_NAMES, PriorBox
from diffinfer.validation import check_choice, check_device, check_float, check_int

Check = Callable[[str, object], object]


def optional(check: Check) -> Check:
    return lambda name, value: None if value is None else check(name, value)


def integer(low: int | None = None) -> Check:
    return lambda name, value: check_int(name, value, low=low)


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> Check:
    def check(name: str, value: object) -> float:
        return check_float(name, value, low=low, high=high, low_open=open_low, high_open=open_high)

    return check


def or_infinity(check: Check) -> Check:
    """``check``, but also accepting +infinity (YAML ``.inf``: the feature switched off)."""

    def checked(name: str, value: object) -> object:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == math.inf:
            return math.inf
        return check(name, value)

    return checked


def choice(choices: tuple) -> Check:
    return lambda name, value: check_choice(name, value, choices)


def text(name: str, value: object) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name} must be a non-empty string, got {value!r}")
    return value


def file_part(name: str, value: object) -> str:
    value = text(name, value)
    if "/" in value or "\\" in value or value != value.strip():
        raise InputError(
            f"{name} must be a part of a file name (no slashes, no surrounding spaces), "
            f"got {value!r}"
        )
    return value


def int_list(low: int, min_len: int = 0) -> Check:
    def check(name: str, value: object) -> list[int]:
        if not isinstance(value, list | tuple) or len(value) < min_len:
            need = f"a list of at least {min_len} integers" if min_len else "a list of integers"
            raise InputError(f"{name} must be {need}, got {value!r}")
        return [check_int(f"{name}[{i}]", v, low=low) for i, v in enumerate(value)]

    return check


def fractions(name: str, value: object) -> list[float]:
    expected = (
        "three non-negative numbers [train, validation, test] summing to 1, with train "
        "and validation > 0"
    )
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise InputError(f"{name} must be {expected}, got {value!r}")
    fr = [check_float(f"{name}[{i}]", v, low=0.0) for i, v in enumerate(value)]
    if not math.isclose(sum(fr), 1.0, abs_tol=1e-6) or fr[0] <= 0 or fr[1] <= 0:
        raise InputError(f"{name} must be {expected}, got {value!r}")
    return fr


def transform_check(name: str, value: object) -> object:
    expected = "'fit', 'prior' or a mapping {shift, scale} (scale > 0)"
    if isinstance(value, dict):
        for key in value:
            if key not in ("kind", "shift", "scale"):
                raise unknown_key(name + ".", key, ["kind", "shift", "scale"])
        try:
            Transform.from_dict(value)
        except (TypeError, ValueError) as exc:  # InputError is a ValueError
            raise InputError(f"{name} must be {expected}: {exc}") from None
        return value
    if value not in ("fit", "prior"):
        raise InputError(f"{name} must be {expected}, got {value!r}")
    return value


def prior_check(name: str, value: object) -> dict:
    expected = "a mapping {" + ", ".join(f"{n}: [low, high]" for n in PARAM_NAMES) + "}"
    if not isinstance(value, dict):
        raise InputError(f"{name} must be {expected}, got {value!r}")
    for key in value:
        if key not in PARAM_NAMES:
            raise unknown_key(name + ".", key, list(PARAM_NAMES))
    try:
        PriorBox.from_dict(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be {expected} with low < high: {exc}") from None
    return value


def device_check(name: str, value: object) -> str:
    return str(check_device(name, value))


# ------------------------------------------------------------------- configuration
def unknown_key(prefix: str, key: object, known: list) -> InputError:
    """The error for a key that is not in ``known``, with the closest known key as a hint."""
    names = sorted(str(k) for k in known)
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
    return InputError(
        f"unknown configuration key {prefix + str(key)!r}{hint} (known keys here: {names})"
    )
