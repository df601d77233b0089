"""The diffinfer command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from diffinfer.cli import main


def test_simulate_writes_a_cmd_data_set(tmp_path, capsys):
    rc = main(
        [
            "simulate",
            "--out",
            str(tmp_path),
            "--n-cosmologies",
            "3",
            "--maps-per-cosmology",
            "2",
            "--n-pix",
            "16",
            "--box-size",
            "125",
            "--no-progress",
        ]
    )
    assert rc == 0
    maps = np.load(tmp_path / "Maps_Mtot_Lognormal_LH_z=0.00.npy")
    assert maps.shape == (6, 16, 16)
    assert (tmp_path / "params_LH_Lognormal.txt").is_file() and (
        tmp_path / "dataset.json"
    ).is_file()


def test_estimate_reports_the_exact_likelihood_fit(capsys):
    assert main(["estimate", "--omega-m", "0.25", "--sigma-8", "0.85", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "Omega_m" in out and "sigma_8" in out and "converged: True" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("Omega_m"))
    est, err, truth = (float(v) for v in row.split()[1:4])
    assert truth == 0.25 and abs(est - truth) < 4 * err


def test_estimate_on_a_map_file_and_bad_files(tmp_path, capsys):
    from diffinfer.simulators import LognormalSimulator

    rho = LognormalSimulator().simulate(np.array([0.3, 0.8]), 1, seed=2)[0]
    np.save(tmp_path / "map.npy", rho)
    assert main(["estimate", "--map", str(tmp_path / "map.npy")]) == 0
    np.save(tmp_path / "neg.npy", -rho)
    assert main(["estimate", "--map", str(tmp_path / "neg.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "positive" in err[0]
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    assert main(["estimate", "--map", str(tmp_path / "junk.npy")]) == 2
    assert "cannot read map" in capsys.readouterr().err
    assert main(["estimate", "--omega-m", "0.9"]) == 2
    assert "outside the prior" in capsys.readouterr().err


def test_help_and_usage_errors_exit_nonzero():
    run = [sys.executable, "-m", "diffinfer.cli"]
    ok = subprocess.run([*run, "simulate", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "--n-cosmologies" in ok.stdout
    bad = subprocess.run([*run, "simulate"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--out" in bad.stderr
