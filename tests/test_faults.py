"""Faults found by killing and starving the long jobs, each reproduced first: a resume never
builds on damaged files, one directory has one writer, and every error names its file."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from diffinfer.calibration.results import load_result, result_problem
from diffinfer.data import CamelsMaps
from diffinfer.data.synthetic import write_synthetic_dataset
from diffinfer.errors import DataFileError
from diffinfer.fields import FieldConfig
from diffinfer.io import directory_lock, write_npz_atomic, write_text_atomic

SMALL = {"n_cosmologies": 12, "maps_per_cosmology": 3, "chunk": 4, "progress": False,
         "config": FieldConfig(n_pix=16, box_size=125.0, depth=50.0)}  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    return write_synthetic_dataset(out, **SMALL)


def _interrupted_copy(finished, out, done: int, keep_bytes: int | None):
    """The state a run killed after ``done`` cosmologies leaves, its maps file cut to
    ``keep_bytes`` (a copy interrupted, a disk that filled)."""
    out.mkdir()
    partial = out / (finished.name + ".partial")
    shutil.copy(finished, partial)
    meta = json.loads((finished.parent / "dataset.json").read_text())
    meta.pop("versions", None)
    (out / "dataset.partial.json").write_text(json.dumps({**meta, "done": done}))
    if keep_bytes is not None:
        os.truncate(partial, keep_bytes)
    return partial


def test_a_truncated_partial_maps_file_is_simulated_again_not_padded_with_zeros(
    finished, tmp_path, capsys
):
    header = 128  # a .npy v1 header
    _interrupted_copy(finished, tmp_path / "x", done=12, keep_bytes=header + 5 * 3 * 16 * 16 * 4)
    out = write_synthetic_dataset(tmp_path / "x", **SMALL)
    np.testing.assert_array_equal(np.load(out), np.load(finished))
    assert "cut short" in capsys.readouterr().err


def test_zeros_in_a_full_length_partial_file_are_simulated_again(finished, tmp_path):
    partial = _interrupted_copy(finished, tmp_path / "y", done=12, keep_bytes=None)
    arr = np.lib.format.open_memmap(partial, mode="r+")
    arr[20:] = 0  # writes that never landed
    arr.flush()
    del arr
    out = write_synthetic_dataset(tmp_path / "y", **SMALL)
    np.testing.assert_array_equal(np.load(out), np.load(finished))


def test_one_directory_has_one_writer(tmp_path):
    with directory_lock(tmp_path / "d", "simulate"):
        with pytest.raises(DataFileError, match=r"being written by simulate \(process"):
            write_synthetic_dataset(tmp_path / "d", **SMALL)
    # released on exit: the run goes ahead, and leaves no progress record behind
    write_synthetic_dataset(tmp_path / "d", **SMALL)
    assert not (tmp_path / "d" / "dataset.partial.json").exists()


def test_damaged_calibration_results_are_recomputed_not_trusted(tmp_path):
    good = {"truth": np.array([0.3, 0.8]), "draws": np.full((10, 2), 0.5),
            "mean": np.array([0.3, 0.8]), "cov": np.eye(2) * 1e-4, "credibility": 0.4,
            "log_pdf_truth": 3.0, "n_evaluations": 70, "edge_mass": 0.0,
            "seconds": 5.0}  # fmt: skip
    assert result_problem(good) is None
    for name, damage, problem in [
        ("nocov", {k: v for k, v in good.items() if k != "cov"}, "missing"),
        ("nanmean", {**good, "mean": np.array([np.nan, 0.8])}, "NaN"),
        ("negative", {**good, "cov": -np.eye(2)}, "covariance"),
    ]:  # fmt: skip
        assert problem in result_problem(damage)
        write_npz_atomic(tmp_path / f"{name}.npz", **damage)
        assert load_result(tmp_path / f"{name}.npz") is None  # the resume recomputes it
    write_npz_atomic(tmp_path / "outside.npz", **{**good, "log_pdf_truth": -np.inf})
    assert load_result(tmp_path / "outside.npz") is not None  # a truth outside the grid


def test_parameter_rows_outside_any_cosmology_and_nan_maps_are_refused_naming_the_file(
    finished, tmp_path
):
    out = tmp_path / "z"
    shutil.copytree(finished.parent, out)
    params = next(out.glob("params_*.txt"))
    table = np.loadtxt(params)
    table[3, 0] = 5.0
    np.savetxt(params, table)
    with pytest.raises(DataFileError, match=r"z: parameter row 3 holds Omega_m = 5"):
        CamelsMaps.open(out, suite="Lognormal")
    table[3, 0] = 0.3
    np.savetxt(params, table)
    maps_file = next(out.glob("Maps_*.npy"))
    arr = np.lib.format.open_memmap(maps_file, mode="r+")
    arr[7, 0, 0] = np.nan
    arr.flush()
    del arr
    data = CamelsMaps.open(out, suite="Lognormal", maps_per_cosmology=3)
    with pytest.raises(DataFileError, match=r"map 7 of .*Maps_.*cosmology 2\) holds NaN"):
        data.load(np.arange(12))


def test_a_failed_write_names_its_file(tmp_path, monkeypatch):
    import errno
    import pathlib

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(pathlib.Path, "write_text", full_disk)
    with pytest.raises(OSError, match=r"File too large \(writing .*report.json\)") as info:
        write_text_atomic(tmp_path / "report.json", "{}")
    assert info.value.filename.endswith("report.json")
