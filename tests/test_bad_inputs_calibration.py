"""Bad inputs to coverage studies and recalibration: every one is refused with a clear
message before anything is written; an interrupted study stops its workers and resumes.

Tables of (input, exception, message fragment) for the API (StudyConfig, run_study,
fit_temperature, load_results, store_temperature) and the command line (calibrate,
recalibrate); positive paths use tiny oracle studies with the exact likelihood.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from diffinfer.calibration.config import STUDY_FILE, StudyConfig
from diffinfer.calibration.results import load_results, result_path
from diffinfer.calibration.study import run_study
from diffinfer.cli import main
from diffinfer.errors import DataFileError, InputError
from diffinfer.io import write_npz_atomic
from diffinfer.likelihoods.temperature import fit_temperature, store_temperature

CHEAP = {"n_coarse": 8, "n_fine": 8}
BASE = {"model": "oracle", "analyses": ["exact"], "n_maps": 2, "n_draws": 50, "options": CHEAP}


def _strict_json(path: Path) -> dict:
    """Parse JSON refusing NaN and infinities, as strict readers do."""

    def refuse(token: str) -> None:
        raise ValueError(f"{path} holds {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


# ----------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A log-normal data set with 4 maps per cosmology (not CMD's 15): 8 cosmologies, so the
    test split holds one cosmology (4 maps)."""
    from diffinfer.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("data4")
    write_synthetic_dataset(root, n_cosmologies=8, maps_per_cosmology=4, seed=3,
                            progress=False)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def other_simulator(tmp_path_factory, dataset) -> Path:
    """The same files, described as maps of another simulator."""
    root = tmp_path_factory.mktemp("other")
    for p in dataset.iterdir():
        shutil.copy(p, root / p.name)
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "simulator": "hydro"}))
    return root


def _fake_result(folder: Path, index: int, *, cov=None, mean=None, temperature: float = 1.0,
                 terms: str = "terms A") -> Path:  # fmt: skip
    """A diffusion result file with what recalibration reads."""
    rng = np.random.default_rng(index)
    truth = np.array([0.3, 0.8])
    cov = np.diag([0.02, 0.01]) ** 2 if cov is None else np.asarray(cov, float)
    mean = truth + rng.normal(size=2) * np.sqrt(np.diag(cov)) if mean is None else mean
    path = result_path(folder, "diffusion", index)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_npz_atomic(path, truth=truth, mean=np.asarray(mean, float), cov=cov,
                            temperature=temperature, terms=np.array(terms), n_noise=1,
                            noise_sigma=0.0, draws=np.tile(truth, (4, 1)), credibility=0.5,
                            log_pdf_truth=0.0, n_evaluations=70, edge_mass=0.0,
                            seconds=1.0)  # fmt: skip


def _fake_study(folder: Path, model: str, n: int = 8, **study) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {**BASE, "model": model, "analyses": ["diffusion"], "split": "validation", **study}
    (folder / STUDY_FILE).write_text(json.dumps(spec))
    for i in range(n):
        _fake_result(folder, i)
    return folder


@pytest.fixture
def model_copy(tmp_path) -> Path:
    """A copy of the shipped model, whose card recalibration may write."""
    from diffinfer.store import resolve_model_dir

    target = tmp_path / "model"
    shutil.copytree(resolve_model_dir("lognormal64"), target)
    return target


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _assert_one_error_line(err: str, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("diffinfer: error:"), err
    assert fragment in lines[0], err
    assert "Traceback" not in err


# ----------------------------------------------------------------------- StudyConfig
CONFIG_CASES = [
    ("n_maps_zero", {"n_maps": 0}, "n_maps"),
    ("n_maps_fraction", {"n_maps": 2.5}, "n_maps"),
    ("n_draws_too_few", {"n_draws": 5}, "n_draws"),
    ("noise_nan", {"noise_sigma": math.nan}, "noise_sigma"),
    ("noise_negative", {"noise_sigma": -0.1}, "noise_sigma"),
    ("temperature_negative", {"temperature": -1.0}, "temperature"),
    ("temperature_inf", {"temperature": math.inf}, "temperature"),
    ("temperature_without_diffusion", {"temperature": 2.0}, "has none (analyses ['exact'])"),
    ("analysis_unknown", {"analyses": ["exact", "bogus"]}, "unknown: ['bogus']"),
    ("analyses_empty", {"analyses": []}, "at least one"),
    ("analyses_string", {"analyses": "exact"}, "must be a list"),
    ("analysis_twice", {"analyses": ["exact", "exact"]}, "twice"),
    ("method_unknown", {"method": "hmc"}, "method must be one of"),
    ("split_train", {"split": "train"}, "split must be one of"),
    ("seed_negative", {"seed": -1}, "seed"),
    ("likelihood_reference", {"likelihood": "exact"}, "likelihood must be one of"),
    ("likelihood_empty", {"likelihood": []}, "non-empty list"),
    ("likelihood_term_twice", {"likelihood": [0, 0]}, "twice"),
    ("likelihood_term_negative", {"likelihood": [-1]}, "term index"),
    ("option_typo", {"options": {"n_corse": 16}}, "did you mean 'n_coarse'"),
    ("option_unknown", {"options": {"bogus": 1}}, "unknown posterior option 'bogus'"),
    ("option_other_method", {"options": {"n_walkers": 16}}, "unknown posterior option"),
    ("option_noise", {"options": {"noise_sigma": 0.1}}, "--noise-sigma"),
    ("option_nan", {"options": {"tol": math.nan}}, "tol must be a number"),
    ("model_empty", {"model": ""}, "model must be"),
    ("data_not_a_path", {"data": 3}, "data must be a directory"),
]


@pytest.mark.parametrize(("changes", "fragment"), [c[1:] for c in CONFIG_CASES],
                         ids=[c[0] for c in CONFIG_CASES])  # fmt: skip
def test_study_config_refuses(changes, fragment):
    with pytest.raises(InputError) as info:
        StudyConfig(**{**BASE, **changes})
    assert fragment in str(info.value)


def test_option_values_are_checked():
    with pytest.raises(InputError, match="n_coarse"):
        StudyConfig(**{**BASE, "options": {"n_coarse": 2}})


# ----------------------------------------------------------------------- run_study
RUN_CASES = [
    # (id, config changes, run_study keywords, exception, fragment)
    ("workers_negative", {}, {"workers": -3}, InputError, "workers"),
    ("threads_zero", {}, {"threads": 0}, InputError, "threads"),
    ("batch_zero", {}, {"batch": 0}, InputError, "batch"),
    ("device_unknown", {}, {"device": "tpu"}, InputError, "device must be"),
    ("scheduler_and_executor", {}, {"scheduler": "tcp://x:1", "executor": object()},
     InputError, "not both"),
    ("unknown_model", {"model": "no_such_model"}, {}, DataFileError, "not found"),
    ("term_beyond_schedule", {"analyses": ["diffusion"], "likelihood": [5000]}, {},
     InputError, "term indices must lie in"),
    ("missing_data", {"data": "MISSING"}, {}, DataFileError, "data directory not found"),
    ("data_is_a_file", {"data": "FILE"}, {}, DataFileError, "is a file"),
    ("split_too_small", {"data": "DATA", "n_maps": 5}, {}, InputError, "asks for more"),
    ("other_simulator", {"data": "OTHER"}, {}, InputError, "another simulator"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "keywords", "exc", "fragment"),
                         [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES])  # fmt: skip
def test_run_study_refuses_before_writing(tmp_path, dataset, other_simulator, changes, keywords,
                                          exc, fragment):  # fmt: skip
    (tmp_path / "file.txt").write_text("not a directory")
    paths = {"MISSING": str(tmp_path / "no-such-data"), "FILE": str(tmp_path / "file.txt"),
             "DATA": str(dataset), "OTHER": str(other_simulator)}  # fmt: skip
    changes = {k: paths.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    out = tmp_path / "study"
    with pytest.raises(exc) as info:
        run_study(StudyConfig(**{**BASE, **changes}), out, progress=False, **keywords)
    assert fragment in str(info.value)
    assert not out.exists()


def test_out_that_is_a_file_or_holds_another_study(tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        run_study(StudyConfig(**BASE), file, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    spec = {**BASE, "seed": 5}
    (other / STUDY_FILE).write_text(json.dumps(spec))
    with pytest.raises(InputError, match="different study"):
        run_study(StudyConfig(**BASE), other, progress=False)
    assert json.loads((other / STUDY_FILE).read_text()) == spec  # left as it was


# ----------------------------------------------------------------------- results, temperature
def _results(n: int = 6) -> list[dict]:
    truth = np.array([0.3, 0.8])
    return [{"index": i, "truth": truth, "mean": truth + 0.01 * (i % 3 - 1),
             "cov": np.diag([4e-4, 1e-4]), "temperature": 1.0} for i in range(n)]  # fmt: skip


def _with(i: int, **changes) -> list[dict]:
    results = _results()
    results[i] = {**results[i], **changes}
    return results


FIT_CASES = [
    ("too_few", _results(3), "at least 5"),
    ("not_a_list", "results", "must be a list"),
    ("zero_width", _with(3, cov=np.zeros((2, 2))), "map 00003"),
    ("singular", _with(2, cov=np.ones((2, 2)) * 1e-4), "singular"),
    ("nan_mean", _with(1, mean=np.array([np.nan, 0.8])), "not finite"),
    ("inf_cov", _with(4, cov=np.diag([np.inf, 1e-4])), "not finite"),
    ("missing_cov", [{k: v for k, v in r.items() if k != "cov"} for r in _results()], "lacks"),
    ("wrong_shape", _with(0, cov=np.eye(3)), "shapes"),
    ("bad_temperature", _with(5, temperature=-2.0), "temperature"),
]


@pytest.mark.parametrize(("results", "fragment"), [c[1:] for c in FIT_CASES],
                         ids=[c[0] for c in FIT_CASES])  # fmt: skip
def test_fit_temperature_refuses(results, fragment):
    with pytest.raises(InputError) as info:
        fit_temperature(results)
    assert fragment in str(info.value)


def test_fit_temperature_names_the_map_of_a_singular_covariance():
    with pytest.raises(InputError, match=r"map 00003 .*singular"):
        fit_temperature(_with(3, cov=np.zeros((2, 2))))


def test_report_names_zero_width_posteriors():
    from diffinfer.calibration.report import analysis_metrics
    from diffinfer.parameters import DEFAULT_PRIOR

    rng = np.random.default_rng(0)
    results = [{"index": i, "truth": np.array([0.3, 0.8]), "mean": np.array([0.3, 0.8]),
                "draws": np.array([0.3, 0.8]) + 0.01 * rng.normal(size=(50, 2)),
                "cov": np.diag([1e-4, 1e-4])} for i in range(4)]  # fmt: skip
    results[2]["cov"] = np.zeros((2, 2))
    with pytest.raises(InputError, match=r"maps \[2\] have a zero-width posterior"):
        analysis_metrics(results, DEFAULT_PRIOR)


def test_load_results_reports_unreadable_files(tmp_path):
    for i in range(4):
        _fake_result(tmp_path, i)
    result_path(tmp_path, "diffusion", 2).write_bytes(b"truncated")
    with pytest.raises(DataFileError, match=r"00002\.npz.*rerun the study"):
        load_results(tmp_path, "diffusion")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable .*00002\.npz"):
        kept = load_results(tmp_path, "diffusion", unreadable="warn")
    assert [r["index"] for r in kept] == [0, 1, 3]
    assert len(load_results(tmp_path, "diffusion", unreadable="skip")) == 3
    with pytest.raises(InputError, match="unreadable must be one of"):
        load_results(tmp_path, "diffusion", unreadable="maybe")
    with pytest.raises(InputError, match="analysis must be one of"):
        load_results(tmp_path, "bogus")


def test_store_temperature_needs_a_real_model_card(tmp_path):
    fit = {"temperature": 1.2, "se": 0.1, "n_maps": 10}
    with pytest.raises(InputError, match="oracle has no model card"):
        store_temperature("oracle", fit, "terms A", 1)
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "card.json").write_text(json.dumps({"name": "not a model"}))
    with pytest.raises(DataFileError, match="not a diffinfer model card"):
        store_temperature(fake, fit, "terms A", 1)
    assert json.loads((fake / "card.json").read_text()) == {"name": "not a model"}
    with pytest.raises(InputError, match="temperature"):
        store_temperature(fake, {**fit, "temperature": math.nan}, "terms A", 1)


# ----------------------------------------------------------------------- calibrate (CLI)
CLI_CASES = [
    ("workers_negative", ["--workers", "-3"], "--workers"),
    ("threads_zero", ["--threads", "0"], "--threads"),
    ("batch_zero", ["--batch", "0"], "--batch"),
    ("device_unknown", ["--device", "tpu"], "--device must be"),
    ("n_maps_zero", ["--n-maps", "0"], "--n-maps"),
    ("n_draws_zero", ["--n-draws", "0"], "--n-draws"),
    ("noise_nan", ["--noise-sigma", "nan"], "--noise-sigma"),
    ("temperature_negative", ["--temperature", "-1"], "--temperature"),
    ("temperature_without_diffusion", ["--temperature", "2"], "--set temperature=T"),
    ("seed_negative", ["--seed", "-1"], "--seed"),
    ("n_timesteps_negative", ["--n-timesteps", "-2"], "--n-timesteps"),
    ("t_min_zero", ["--t-min", "0"], "--t-min"),
    ("set_typo", ["--set", "bogus=1"], "unknown posterior option 'bogus'"),
    ("set_without_value", ["--set", "n_coarse"], "OPTION=VALUE"),
    ("set_twice", ["--set", "n_coarse=8", "--set", "n_coarse=9"], "twice"),
    ("set_nan", ["--set", "tol=.nan"], "finite"),
    ("set_noise", ["--set", "noise_sigma=0.1"], "--noise-sigma"),
    ("analysis_unknown", ["--analyses", "exact,exakt"], "unknown: ['exakt']"),
    ("analyses_empty_entry", ["--analyses", "exact,"], "unknown: ['']"),
    ("unknown_model", ["--model", "no_such_model"], "not found"),
    ("missing_data", ["--data", "MISSING"], "data directory not found"),
    ("likelihood_reference", ["--likelihood", "exact"], "likelihood must be one of"),
    ("likelihood_term", ["--analyses", "diffusion", "--likelihood", "0,5000"], "term indices"),
    ("likelihood_text", ["--likelihood", "0,x"], "--likelihood"),
    (
        "spectrum_missing",
        ["--analyses", "power", "--set", "spectrum=MISSING"],
        "power-spectrum likelihood file not found",
    ),
]


@pytest.mark.parametrize(("extra", "fragment"), [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])  # fmt: skip
def test_calibrate_cli_refuses_before_creating_out(tmp_path, capsys, extra, fragment):
    out = tmp_path / "study"
    missing = str(tmp_path / "no-such-data")
    extra = [e.replace("MISSING", missing) for e in extra]
    argv = ["calibrate", "--model", "oracle", "--analyses", "exact", "--n-maps", "2",
            "--out", str(out), "--no-progress", *extra]  # fmt: skip
    rc, _, err = _cli(argv, capsys)
    assert rc == 2
    _assert_one_error_line(err, fragment)
    assert not out.exists()


@pytest.mark.parametrize("extra", [["--bogus-flag"], ["--workers", "many"], ["--method", "hmc"]],
                         ids=["flag", "type", "choice"])  # fmt: skip
def test_calibrate_cli_bad_option_creates_nothing(tmp_path, capsys, extra):
    out = tmp_path / "study"
    with pytest.raises(SystemExit) as info:
        main(["calibrate", "--model", "oracle", "--out", str(out), *extra])
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not out.exists()


def test_calibrate_on_a_data_set_of_4_maps_per_cosmology(tmp_path, capsys, dataset):
    """--data with the oracle reads dataset.json (4 maps per cosmology); a failed call
    leaves nothing and the corrected one runs; study.json and report.json are strict JSON
    (one map: the z-score spread is NaN, written as null)."""
    from diffinfer.data.camels import CamelsMaps

    out = tmp_path / "study"
    argv = ["calibrate", "--model", "oracle", "--analyses", "exact", "--data", str(dataset),
            "--n-draws", "50", "--set", "n_coarse=8", "--set", "n_fine=8", "--out", str(out),
            "--no-progress"]  # fmt: skip
    rc, _, err = _cli([*argv, "--n-maps", "0"], capsys)
    assert rc == 2 and not out.exists(), err
    handler = signal.getsignal(signal.SIGTERM)
    rc, printed, err = _cli([*argv, "--n-maps", "1"], capsys)
    assert rc == 0, err
    assert signal.getsignal(signal.SIGTERM) is handler  # restored
    assert "exact" in printed and "nan" in printed
    maps = CamelsMaps.open(dataset, suite="Lognormal", maps_per_cosmology=4)
    first = maps.split_maps("test")[0]
    (result,) = load_results(out, "exact")
    np.testing.assert_allclose(result["truth"], maps.theta(first))
    study = _strict_json(out / STUDY_FILE)
    assert study["data"] == str(dataset) and study["temperature"] is None
    report = _strict_json(out / "report.json")
    assert report["analyses"]["exact"]["z_score"]["Omega_m"]["std"] is None


# ----------------------------------------------------------------------- recalibrate (CLI)
def test_recalibrate_reports_unreadable_results(tmp_path, capsys):
    study = _fake_study(tmp_path / "s", "oracle", n=8)
    rc, out, _ = _cli(["recalibrate", str(study)], capsys)
    assert rc == 0 and "from 8 maps" in out
    result_path(study, "diffusion", 5).write_bytes(b"\x00" * 10)
    rc, out, err = _cli(["recalibrate", str(study)], capsys)
    assert rc == 2 and out == ""
    _assert_one_error_line(err, "1 unreadable diffusion result file(s)")
    assert "00005.npz" in err and "--skip-unreadable" in err
    rc, out, err = _cli(["recalibrate", str(study), "--skip-unreadable"], capsys)
    assert rc == 0 and "from 7 maps" in out
    assert "skipped 1 unreadable result file(s): 00005.npz" in err


RECAL_CASES = [
    ("missing_study", "MISSING", [], "study directory not found"),
    ("singular_covariance", "SINGULAR", [], "map 00003"),
    ("no_diffusion_results", "EMPTY", [], "no diffusion results"),
    ("store_without_model", "STUDY", ["--store"], "--model NAME_OR_DIR"),
    ("store_other_model", "STUDY", ["--store", "--model", "lognormal64"], "was computed with"),
    ("store_oracle", "ORACLE", ["--store", "--model", "oracle"], "oracle has no model card"),
    ("unknown_model", "STUDY", ["--model", "no_such_model"], "not found"),
]


@pytest.mark.parametrize(("which", "extra", "fragment"), [c[1:] for c in RECAL_CASES],
                         ids=[c[0] for c in RECAL_CASES])  # fmt: skip
def test_recalibrate_cli_refuses(tmp_path, capsys, model_copy, which, extra, fragment):
    folders = {"MISSING": tmp_path / "none", "STUDY": _fake_study(tmp_path / "s", str(model_copy)),
               "ORACLE": _fake_study(tmp_path / "o", "oracle"),
               "EMPTY": _fake_study(tmp_path / "e", "oracle", n=0)}  # fmt: skip
    singular = _fake_study(tmp_path / "z", "oracle")
    _fake_result(singular, 3, cov=np.zeros((2, 2)))
    folders["SINGULAR"] = singular
    card = (model_copy / "card.json").read_text()
    rc, _, err = _cli(["recalibrate", str(folders[which]), *extra], capsys)
    assert rc == 2
    _assert_one_error_line(err, fragment)
    assert (model_copy / "card.json").read_text() == card


def test_recalibrate_store_writes_only_the_named_model(tmp_path, capsys, model_copy):
    """A crafted study naming a victim directory cannot rewrite it: --store writes the card
    of --model, which must be the study's model and a real model card."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "card.json").write_text(json.dumps({"name": "victim", "weights": {}}))
    before = (victim / "card.json").read_text()
    crafted = _fake_study(tmp_path / "crafted", str(victim))
    rc, _, err = _cli(["recalibrate", str(crafted), "--store", "--model", str(model_copy)],
                      capsys)  # fmt: skip
    assert rc == 2 and "was computed with" in err
    rc, _, err = _cli(["recalibrate", str(crafted), "--store", "--model", str(victim)], capsys)
    assert rc == 2 and "not a diffinfer model card" in err
    assert (victim / "card.json").read_text() == before
    # the study's own model, named by the user: stored
    study = _fake_study(tmp_path / "good", str(model_copy))
    rc, _, err = _cli(["recalibrate", str(study), "--store", "--model", str(model_copy)],
                      capsys)  # fmt: skip
    assert rc == 0, err
    entries = json.loads((model_copy / "card.json").read_text())["calibration"]
    assert [e["likelihood"] for e in entries if e["n_maps"] == 8] == ["terms A"]


# ----------------------------------------------------------------------- interrupts
def _children(pid: int) -> list[int]:
    """Every descendant process of ``pid`` (psutil, else a /proc scan)."""
    try:
        import psutil

        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        parents = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found, frontier = [], [pid]
        while frontier:
            p = frontier.pop()
            kids = [c for c, parent in parents.items() if parent == p]
            found += kids
            frontier += kids
        return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _snapshot(folder: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in folder.iterdir()} if folder.exists() else {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_the_workers_and_the_study_resumes(tmp_path, capsys):
    out = tmp_path / "study"
    n_maps = 12
    argv = ["calibrate", "--model", "oracle", "--analyses", "exact", "--n-maps", str(n_maps),
            "--n-draws", "100", "--set", "n_coarse=8", "--set", "n_fine=8", "--out", str(out),
            "--no-progress"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "diffinfer", *argv, "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    folder = out / "results" / "exact"
    try:
        deadline = time.monotonic() + 120
        while not any(folder.glob("*.npz")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no result within 120 s"
            time.sleep(0.02)
        children = _children(proc.pid)
        assert len(children) >= 2  # the two workers (and multiprocessing's resource tracker)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "diffinfer: interrupted (calibrate, simulate and train --resume continue from what "
        "was finished)"
    ]
    done = _snapshot(folder)
    time.sleep(1.0)
    assert [pid for pid in children if _alive(pid)] == []
    assert _snapshot(folder) == done  # nothing writes results any more
    assert len([n for n in done if not n.startswith(".")]) < n_maps
    # the rerun resumes: only the missing maps, and the report covers all of them
    rc, printed, err = _cli([*argv, "--workers", "1"], capsys)
    assert rc == 0, err
    assert len(load_results(out, "exact")) == n_maps
    for name, mtime in done.items():
        if not name.startswith("."):
            assert (folder / name).stat().st_mtime == mtime  # finished maps were kept
    assert f"exact     {n_maps:6d}" in printed
