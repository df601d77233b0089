"""The results of a study: one file per (analysis, map), written atomically, validated when
read."""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from diffinfer.errors import DataFileError
from diffinfer.validation import check_choice

ANALYSES = ("diffusion", "exact", "power", "npe", "npe-power", "npe-diffusion")


UNREADABLE = ("raise", "warn", "skip")


def result_path(out: Path, analysis: str, index: int) -> Path:
    """Where the result of one (analysis, map) pair is written."""
    return Path(out) / "results" / analysis / f"{index:05d}.npz"


RESULT_KEYS = ("truth", "draws", "mean", "cov", "credibility", "log_pdf_truth",
               "n_evaluations", "edge_mass", "seconds")  # fmt: skip
"""What every result file holds (:func:`~diffinfer.calibration.study.run_maps`); a file without
one of them is damaged."""


def load_result(path: Path) -> dict | None:
    """One result file as a dict of arrays, or None if it is missing, unreadable or damaged
    (:func:`result_problem`): a resumed study recomputes such maps rather than trust them."""
    try:
        with np.load(path, allow_pickle=False) as f:
            result = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None
    return None if result_problem(result) else result


def result_problem(result: dict) -> str | None:
    """What is wrong with a result's contents, in words, or None: every key of
    :data:`RESULT_KEYS`, of the right shapes, with finite values (the log density at the
    truth may be -inf: a truth outside the grid) and a covariance without negative variances
    (a zero-width posterior is a result, which the report names)."""
    missing = [k for k in RESULT_KEYS if k not in result]
    if missing:
        return f"missing {missing}"
    try:
        truth, mean = np.asarray(result["truth"], float), np.asarray(result["mean"], float)
        cov, draws = np.asarray(result["cov"], float), np.asarray(result["draws"], float)
        scalars = [float(result[k]) for k in ("credibility", "n_evaluations", "edge_mass",
                                               "seconds")]  # fmt: skip
        log_pdf = float(result["log_pdf_truth"])
    except (TypeError, ValueError):
        return "values that are not numbers"
    if truth.shape != (2,) or mean.shape != (2,) or cov.shape != (2, 2) or draws.ndim != 2 \
            or draws.shape[-1:] != (2,) or len(draws) == 0:  # fmt: skip
        return "arrays of the wrong shape"
    if not all(np.isfinite(a).all() for a in (truth, mean, cov, draws, scalars)):
        return "NaN or inf values"
    if math.isnan(log_pdf) or log_pdf == math.inf or (np.diag(cov) < 0).any():
        return "an impossible log density or covariance"
    return None


def _result_files(out: str | os.PathLike, analysis: str) -> list[Path]:
    check_choice("analysis", analysis, ANALYSES)
    return sorted((Path(out) / "results" / analysis).glob("[0-9][0-9][0-9][0-9][0-9].npz"))


def read_results(out: str | os.PathLike, analysis: str) -> tuple[list[dict], list[Path]]:
    """The finished results of one analysis, in map order (each with its ``index``), and
    the result files that cannot be read (truncated, corrupted); one pass over the files."""
    results, bad = [], []
    for p in _result_files(out, analysis):
        r = load_result(p)
        if r is None:
            bad.append(p)
            continue
        r["index"] = int(p.stem)
        results.append(r)
    return results, bad


def load_results(out: str | os.PathLike, analysis: str, *, unreadable: str = "raise") -> list[dict]:
    """Every finished result of one analysis, in map order (each with its ``index``).

    Parameters
    ----------
    out
        The study directory.
    analysis
        ``"diffusion"``, ``"exact"`` or ``"power"``.
    unreadable
        What to do with result files that cannot be read: ``"raise"`` (default) a
        :class:`~diffinfer.errors.DataFileError` naming them, ``"warn"`` skip them with a
        warning naming them, ``"skip"`` skip them silently. Skipping changes every metric
        computed from the results: rerunning the study recomputes those maps.

    Raises
    ------
    DataFileError
        Unreadable result files (with ``unreadable="raise"``).
    """
    check_choice("unreadable", unreadable, UNREADABLE)
    results, bad = read_results(out, analysis)
    if bad and unreadable != "skip":
        text = (f"{len(bad)} unreadable {analysis} result file(s) in {out}: "
                f"{', '.join(p.name for p in bad)}")  # fmt: skip
        if unreadable == "raise":
            raise DataFileError(f"{text}; rerun the study (same command) to recompute them, "
                                "or delete them to go on without those maps")  # fmt: skip
        warnings.warn(f"skipped {text}", stacklevel=2)
    return results
