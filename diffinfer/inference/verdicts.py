"""The warning a posterior gives when its model and setting were not found ``calibrated``.

Model cards hold a ``verdicts`` list (written from a study by
:func:`diffinfer.calibration.verdicts.store_verdict`), keyed by the likelihood's term set,
noise draws, pixel noise and temperature. :func:`warn_if_uncalibrated` (called by
:func:`diffinfer.posterior`) warns once per process and setting where that verdict is not
``calibrated``, or where no study of the setting is on record.
"""

from __future__ import annotations

import math
import warnings


class CalibrationWarning(UserWarning):
    """The model and setting in use were not found calibrated by a study on record."""


_WARNED: set[tuple] = set()


def verdict_key(entry: dict) -> tuple:
    return (entry["likelihood"], int(entry["n_noise"]), float(entry["noise_sigma"]),
            round(float(entry["temperature"]), 6))  # fmt: skip


def card_verdict(card: dict, likelihood: str, n_noise: int, noise_sigma: float,
                 temperature: float) -> dict | None:  # fmt: skip
    """The card's verdict entry for this setting (term set, noise draws, pixel noise,
    temperature within 1e-6), or None."""
    for e in card.get("verdicts") or []:
        if (
            e["likelihood"] == likelihood
            and int(e["n_noise"]) == n_noise
            and math.isclose(float(e["noise_sigma"]), noise_sigma, abs_tol=1e-12)
            and math.isclose(float(e["temperature"]), temperature, rel_tol=1e-6)
        ):
            return e
    return None


def warn_if_uncalibrated(card: dict, likelihood: str, n_noise: int, noise_sigma: float,
                         temperature: float) -> dict | None:  # fmt: skip
    """Warn (:class:`CalibrationWarning`, once per process and setting) unless the card
    holds a ``calibrated`` verdict for this setting; returns the entry found (or None)."""
    entry = card_verdict(card, likelihood, n_noise, noise_sigma, temperature)
    name = card.get("name", "this model")
    key = (name, likelihood, n_noise, noise_sigma, round(temperature, 6))
    if (entry is not None and entry["verdict"] == "calibrated") or key in _WARNED:
        return entry
    _WARNED.add(key)
    setting = f"{name} ({likelihood}, temperature {temperature:.3g})"
    if entry is None:
        others = sorted({f"{e['likelihood']} at temperature {e['temperature']:.3g}: "
                         f"{e['verdict']}" for e in card.get("verdicts") or []})  # fmt: skip
        msg = (
            f"{setting}: no calibration study of this setting is on record, so its "
            "credible intervals are unchecked"
            + (f" (studies of this model: {'; '.join(others)})" if others else "")
            + "; run one with `diffinfer calibrate` (docs/calibration.md)"
        )
    else:
        msg = (
            f"{setting} is {entry['verdict']} by its latest study ({entry['study']}, "
            f"{entry['n_maps']} maps): {'; '.join(entry['failed']) or 'see its report'}. "
            "Treat its credible intervals as approximate (docs/calibration.md)"
        )
    from diffinfer.likelihoods.npe import calibrated_route

    route = calibrated_route(name)
    if route is not None:
        msg += f". A calibrated alternative: {route}"
    warnings.warn(msg, CalibrationWarning, stacklevel=3)
    return entry
