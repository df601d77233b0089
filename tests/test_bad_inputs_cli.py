"""Bad input to ``diffinfer infer``, ``estimate`` and ``simulate``: one line on stderr, exit
status 2, no traceback, and no output directory left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffinfer.cli import main
from diffinfer.cli.commands import read_map_option
from diffinfer.io import LOCK_FILE  # the writer's lock, not data
from tests.cli_helpers import fill, run_bad

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / "examples" / "lognormal64" / "map1.npy"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("maps")
    m = np.load(MAP)
    arrays = {
        "times1000.npy": m * 1000,
        "delta.npy": m - 1,
        "log10.npy": np.log10(m),
        "constant.npy": np.ones_like(m),
        "nan.npy": np.where(m > 3, np.nan, m),
        "small.npy": m[::2, ::2],
        "stack.npy": np.stack([m, m * 1.01]),
        "strings.npy": np.full((4, 4), "x"),
        "complex.npy": m.astype(complex),
    }
    paths = {}
    for name, array in arrays.items():
        np.save(d / name, array)
        paths[name] = d / name
    np.savez(d / "two.npz", a=m, b=m)
    paths["two.npz"] = d / "two.npz"
    np.savez(d / "named.npz", other=m * 2, map=m)
    paths["named.npz"] = d / "named.npz"
    (d / "text.npy").write_text("not an array")
    paths["text.npy"] = d / "text.npy"
    np.save(d / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    paths["object.npy"] = d / "object.npy"
    paths["dir"] = d
    (d / "a-file").write_text("x")
    paths["a-file"] = d / "a-file"
    return paths


EXACT = ["--model", "none", "--likelihood", "exact"]
INFER_CASES = {
    "map-missing": (["{tmp}/none.npy"], "map file not found"),
    "map-is-directory": (["{dir}"], "is a directory"),
    "map-not-npy": (["{text.npy}"], "cannot read map"),
    "map-pickled-objects": (["{object.npy}"], "cannot read map"),
    "map-strings": (["{strings.npy}"], "real numbers"),
    "map-complex": (["{complex.npy}"], "real numbers"),
    "map-times-1000": (["{times1000.npy}"], "--kind"),
    "map-overdensity": (["{delta.npy}"], "kind='overdensity'"),
    "map-log10": (["{log10.npy}"], "kind='log10'"),
    "density-as-overdensity": ([str(MAP), "--kind", "overdensity"], "kind='density'"),
    "map-constant": (["{constant.npy}"], "no structure"),
    "map-nan": (["{nan.npy}"], "NaN"),
    "map-wrong-size": (["{small.npy}"], "expects 64 x 64"),
    "stack-without-index": (["{stack.npy}"], "--index"),
    "stack-index-out-of-range": (["{stack.npy}", "--index", "5"], "--index must be"),
    "index-for-one-map": ([str(MAP), "--index", "0"], "holds one map"),
    "npz-ambiguous": (["{two.npz}"], "holds arrays"),
    "n-samples-0": ([str(MAP), "--n-samples", "0"], "--n-samples must be"),
    "n-samples-negative": ([str(MAP), "--n-samples", "-4"], "--n-samples must be"),
    "seed-negative": ([str(MAP), "--seed", "-1"], "--seed must be"),
    "n-timesteps-negative": (
        [str(MAP), "--model", "oracle", "--n-timesteps", "-2"],
        "--n-timesteps must be",
    ),
    "t-min-for-a-reference": (
        [str(MAP), "--likelihood", "exact", "--t-min", "30"],
        "--t-min cuts the diffusion likelihood",
    ),
    "t-min-zero": ([str(MAP), "--model", "oracle", "--t-min", "0"], "--t-min must be"),
    "t-min-beyond-schedule": ([str(MAP), "--model", "oracle", "--t-min", "1001"], "t_min must be"),
    "t-min-with-l0": (
        [str(MAP), "--model", "oracle", "--likelihood", "l0", "--t-min", "5"],
        "t_min applies to the full bound",
    ),
    "truth-outside-prior": ([str(MAP), "--truth", "2", "0.8"], "--truth"),
    "truth-nan": ([str(MAP), "--truth", "nan", "0.8"], "--truth"),
    "likelihood-bad": (
        [str(MAP), "--model", "oracle", "--likelihood", "elbo"],
        "--likelihood must be",
    ),
    "likelihood-bad-terms": (
        [str(MAP), "--model", "oracle", "--likelihood", "0,x"],
        "--likelihood must be",
    ),
    "model-missing": ([str(MAP), "--model", "no-such-model"], "not found"),
    "device-unknown": ([str(MAP), "--device", "tpu"], "device"),
    "diffusion-without-model": ([str(MAP), "--model", "none"], "needs a model"),
    "out-is-a-file": ([str(MAP), "--out", "{a-file}"], "not a directory"),
}


@pytest.mark.parametrize("case", list(INFER_CASES), ids=list(INFER_CASES))
def test_infer_bad_inputs(case, files, tmp_path, capsys):
    argv, fragment = INFER_CASES[case]
    argv = fill(argv, {**files, "tmp": tmp_path})
    out = tmp_path / "out"
    if "--out" not in argv:
        argv += ["--out", str(out)]
    if "--model" not in argv:
        argv += EXACT
    run_bad(["infer", *argv], capsys, fragment)
    assert not out.exists()


def test_infer_into_a_directory_that_cannot_be_made(tmp_path, capsys):
    # /sys refuses new entries even to root (a read-only directory would not stop root)
    run_bad(["infer", str(MAP), *EXACT, "--out", "/sys/diffinfer-out"], capsys,
            "not permitted")  # fmt: skip


ESTIMATE_CASES = {
    "omega-m-outside-prior": (["--omega-m", "2"], "outside the prior"),
    "sigma-8-nan": (["--sigma-8", "nan"], "NaN"),
    "seed-negative": (["--seed", "-3"], "--seed must be"),
    "n-pix-odd": (["--n-pix", "63"], "n_pix must be an even integer"),
    "box-negative": (["--box-size", "-500"], "box_size must be a number > 0"),
    "depth-inf": (["--depth", "inf"], "depth must be"),
    "map-times-1000": (["--map", "{times1000.npy}"], "has mean"),
    "map-missing": (["--map", "{tmp}/none.npy"], "map file not found"),
    "map-wrong-size": (["--map", "{small.npy}"], "expects 64 x 64"),
    "kind-mismatch": (["--map", str(MAP), "--kind", "log10"], "kind='density'"),
}


@pytest.mark.parametrize("case", list(ESTIMATE_CASES), ids=list(ESTIMATE_CASES))
def test_estimate_bad_inputs(case, files, tmp_path, capsys):
    argv, fragment = ESTIMATE_CASES[case]
    run_bad(["estimate", *fill(argv, {**files, "tmp": tmp_path})], capsys, fragment)


SIMULATE_CASES = {
    "no-cosmologies": (["--n-cosmologies", "0"], "n_cosmologies must be an integer >= 1"),
    "negative-maps": (["--maps-per-cosmology", "-1"], "maps_per_cosmology must be"),
    "seed-negative": (["--seed", "-1"], "seed must be an integer >= 0"),
    "set-name-with-slash": (["--set", "../LH"], "set_name must be"),
    "n-pix-zero": (["--n-pix", "0"], "n_pix must be"),
    "box-nan": (["--box-size", "nan"], "box_size must be"),
    "nbody-mesh-too-small": (
        ["--simulator", "nbody", "--particles", "64", "--mesh", "32"],
        "mesh 32 does not fit 64^3 particles",
    ),
    "nbody-box-out-of-range": (["--simulator", "nbody", "--box-size", "5"], "box_size must be"),
    "nbody-steps-out-of-range": (["--simulator", "nbody", "--steps", "1000"], "n_steps must be"),
    "nbody-depth": (["--simulator", "nbody", "--depth", "20"], "--depth is set by the N-body"),
    "nbody-too-many-maps": (
        ["--simulator", "nbody", "--maps-per-cosmology", "16"],
        "exceeds the 15 maps of one N-body box",
    ),
    "mesh-for-lognormal": (["--mesh", "64"], "--mesh only appl"),
}


@pytest.mark.parametrize("case", list(SIMULATE_CASES), ids=list(SIMULATE_CASES))
def test_simulate_bad_inputs(case, tmp_path, capsys):
    argv, fragment = SIMULATE_CASES[case]
    out = tmp_path / "data"
    run_bad(["simulate", "--out", str(out), "--no-progress", *argv], capsys, fragment)
    assert not out.exists()


def test_simulate_refuses_a_directory_of_another_data_set(tmp_path, capsys):
    out = tmp_path / "data"
    main(["simulate", "--out", str(out), "--n-cosmologies", "2", "--n-pix", "16",
          "--no-progress"])  # fmt: skip
    capsys.readouterr()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != LOCK_FILE}
    run_bad(["simulate", "--simulator", "nbody", "--out", str(out), "--n-cosmologies", "2",
             "--no-progress"], capsys, "already holds a lognormal data set")  # fmt: skip
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != LOCK_FILE} == before


def test_simulate_into_a_file(files, capsys):
    run_bad(["simulate", "--out", str(files["a-file"]), "--n-cosmologies", "2"], capsys,
            "not a directory")  # fmt: skip


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="n-samples"):
        main(["--debug", "infer", str(MAP), *EXACT, "--n-samples", "0", "--out",
              str(tmp_path / "o")])  # fmt: skip


def test_a_good_map_in_other_units_runs(files, capsys):
    assert main(["estimate", "--map", str(files["times1000.npy"]), "--kind", "mass"]) == 0
    assert "Omega_m" in capsys.readouterr().out
    np.testing.assert_array_equal(read_map_option(str(files["stack.npy"]), 1), np.load(MAP) * 1.01)
    np.testing.assert_array_equal(read_map_option(str(files["named.npz"])), np.load(MAP))


PROPOSAL_CASES = {
    "one-pilot-map": (["--n-maps", "1"], "--n-maps must be an integer >= 2"),
    "smooth-negative": (["--smooth", "-1"], "smooth must be a number >= 0"),
    "smooth-nan": (["--smooth", "nan"], "smooth must be"),
    "floor-zero": (["--floor", "0"], "floor must be a number in (0, 1]"),
    "floor-two": (["--floor", "2"], "floor must be"),
    "seed-negative": (["--seed", "-1"], "seed must be an integer >= 0"),
    "store-into-the-oracle": (["--model", "oracle", "--store"], "oracle has no model card"),
    "model-missing": (["--model", "no-such-model"], "not found"),
}


@pytest.mark.parametrize("case", list(PROPOSAL_CASES), ids=list(PROPOSAL_CASES))
def test_fit_proposal_bad_inputs(case, capsys):
    argv, fragment = PROPOSAL_CASES[case]
    if "--model" not in argv:
        argv = ["--model", "oracle", *argv]
    run_bad(["fit-proposal", "--no-progress", *argv], capsys, fragment)


def test_unknown_command_and_option_are_usage_errors(capsys):
    for argv in (["frobnicate"], ["infer", str(MAP), "--out", "x", "--bogus"],
                 ["emulate", "--n", "abc", "--out", "x"], []):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert "error:" in err and "--help" in err


def test_a_truncated_npz_is_a_file_error(tmp_path, capsys):
    path = tmp_path / "map.npz"
    np.savez_compressed(path, map=np.load(MAP))
    path.write_bytes(path.read_bytes()[:200])
    run_bad(["infer", str(path), "--out", str(tmp_path / "o"), *EXACT], capsys, "cannot read map")
