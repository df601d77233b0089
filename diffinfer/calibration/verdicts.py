"""A model's calibration verdicts, written to its card from a study.

A study (``diffinfer calibrate``) ends in a verdict per analysis (:func:`~diffinfer.
calibration.report.verdict`). :func:`store_verdict` records the diffusion analysis's verdict
in the model card's ``verdicts`` list, keyed by the likelihood's term set, noise draws, pixel
noise and temperature, with the study and the checks that failed.
:func:`~diffinfer.inference.verdicts.warn_if_uncalibrated` (called by
:func:`diffinfer.posterior`) warns once per process and setting where that verdict is not
``calibrated``, or where no study of the setting is on record.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from diffinfer.errors import DataFileError
from diffinfer.inference.verdicts import verdict_key
from diffinfer.io import read_json
from diffinfer.parameters import PARAM_NAMES

_LABEL = re.compile(r"diffusion likelihood \((?P<terms>.*), (?P<n_noise>\d+) noise draws?\)")


def failed_checks(analysis: dict) -> list[str]:
    """The checks of one analysis of a study report that failed, in words (empty for a
    passing analysis; see :func:`~diffinfer.calibration.report.analysis_metrics`)."""
    out = []
    for name, v in analysis.get("z_score", {}).items():
        if abs(v["std"] - 1) >= 3 * v["std_se"]:
            out.append(f"z-score spread of {name} {v['std']:.2f} +- {v['std_se']:.2f} "
                       "(1 if calibrated)")  # fmt: skip
        if abs(v["mean"]) >= 3 * v["mean_se"]:
            out.append(f"z-score mean of {name} {v['mean']:+.2f} +- {v['mean_se']:.2f} "
                       "(0 if unbiased)")  # fmt: skip
    for key, words in (("hpd_coverage", "HPD coverage"), ("tarp", "TARP coverage")):
        curve = analysis.get(key) or {}
        if curve and not curve.get("inside_band_99", True):
            out.append(f"{words} {curve['max_deviation']:.3f} off the diagonal, outside its "
                       "99 % band")  # fmt: skip
    for name in PARAM_NAMES:
        ranks = (analysis.get("ranks") or {}).get(name) or {}
        if ranks and not ranks.get("inside_band", True):
            out.append(f"SBC ranks of {name} outside their band")
    if analysis.get("verdict") == "not enough maps":
        out.append(
            f"{analysis['n_maps']} maps cannot resolve a coverage deviation of "
            f"{analysis['verdict_resolution']} ({analysis['maps_needed']} needed)"
        )
    return out


def verdict_entry(study_dir: str | os.PathLike, analysis: str = "diffusion") -> dict:
    """The card entry of one analysis of a finished study: its likelihood's term set, noise
    draws, pixel noise and temperature, the verdict, the maps and the failed checks.

    Raises
    ------
    DataFileError
        No report.json in ``study_dir``, no such analysis, or a label that does not name a
        diffusion likelihood.
    """
    study_dir = Path(study_dir)
    report = read_json(study_dir / "report.json", what="calibration report")
    a = (report.get("analyses") or {}).get(analysis)
    if a is None:
        raise DataFileError(f"{study_dir / 'report.json'} has no analysis {analysis!r}; it "
                            f"has {sorted(report.get('analyses') or {})}")  # fmt: skip
    m = _LABEL.search(a.get("label", ""))
    if m is None:
        raise DataFileError(f"{study_dir / 'report.json'}: analysis {analysis!r} is not a "
                            f"diffusion likelihood (label {a.get('label')!r})")  # fmt: skip
    temps = a.get("temperatures") or [1.0]
    return {"study": study_dir.as_posix(), "likelihood": m["terms"], "n_noise": int(m["n_noise"]),
            "noise_sigma": float((report.get("study") or {}).get("noise_sigma") or 0.0),
            "temperature": float(temps[0]), "verdict": a["verdict"], "n_maps": a["n_maps"],
            "failed": failed_checks(a)}  # fmt: skip


def store_verdict(model_dir: str | os.PathLike, study_dir: str | os.PathLike,
                  analysis: str = "diffusion") -> Path:  # fmt: skip
    """Record a study's verdict in a model's card (replacing the entry of the same setting);
    returns the card's path."""
    from diffinfer.store import read_card, resolve_model_dir, update_card

    entry = verdict_entry(study_dir, analysis)
    card = read_card(resolve_model_dir(model_dir))
    kept = [e for e in card.get("verdicts") or [] if verdict_key(e) != verdict_key(entry)]
    return update_card(model_dir, {"verdicts": [*kept, entry]})
