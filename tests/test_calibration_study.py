"""Coverage studies: resumable per-map results, executors (local and Dask), calibration of the
exact posterior, detection of a tempered (overconfident) one, and temperature fitting."""

import json

import numpy as np
import pytest

from diffinfer.calibration.config import StudyConfig
from diffinfer.calibration.results import load_results, result_path
from diffinfer.calibration.study import run_maps, run_study
from diffinfer.errors import InputError
from diffinfer.io import read_json
from diffinfer.likelihoods.temperature import fit_temperature, store_temperature

CHEAP = {"n_coarse": 16, "n_fine": 24}


def test_study_writes_resumes_and_refuses_a_different_study(tmp_path):
    cfg = StudyConfig(
        model="oracle", analyses=["exact", "power"], n_maps=4, n_draws=200, options=CHEAP
    )
    report = run_study(cfg, tmp_path, progress=False)
    assert set(report["analyses"]) == {"exact", "power"}
    assert (tmp_path / "report.json").is_file()
    # the report a person reads: a row per analysis with its verdict, the columns explained,
    # the figures linked
    md = (tmp_path / "report.md").read_text()
    z = report["analyses"]["exact"]["z_score"]["Omega_m"]
    assert f"| exact | 4 | {report['analyses']['exact']['verdict']} |" in md
    assert f"{z['mean']:+.2f} / {z['std']:.2f}" in md
    assert "**HPD dev**" in md and "](figures/coverage.png)" in md
    assert (tmp_path / "figures" / "coverage.png").is_file()
    assert (tmp_path / "figures" / "triangle_00000.png").is_file()
    first = load_results(tmp_path, "exact")
    assert [r["index"] for r in first] == [0, 1, 2, 3]
    # a killed run: one result lost, one left half-written
    result_path(tmp_path, "exact", 2).unlink()
    result_path(tmp_path, "power", 1).write_bytes(b"truncated")
    done = []
    run_study(cfg, tmp_path, progress=False, on_result=done.append)
    assert sorted(done) == sorted(
        [str(result_path(tmp_path, "exact", 2)), str(result_path(tmp_path, "power", 1))]
    )
    again = load_results(tmp_path, "exact")
    np.testing.assert_array_equal(again[2]["draws"], first[2]["draws"])
    # growing the study is a resume; changing it is refused
    grown = StudyConfig(**{**cfg.__dict__, "n_maps": 5})
    done.clear()
    run_study(grown, tmp_path, progress=False, on_result=done.append)
    assert len(done) == 2
    # so is a report on fewer analyses (the other results stay on disk)
    done.clear()
    report = run_study(StudyConfig(**{**grown.__dict__, "analyses": ["power"]}), tmp_path,
                       progress=False, on_result=done.append)  # fmt: skip
    assert not done and set(report["analyses"]) == {"power"}
    with pytest.raises(InputError, match="different study"):
        run_study(StudyConfig(**{**cfg.__dict__, "seed": 1}), tmp_path, progress=False)


def test_adding_an_analysis_computes_only_its_results(tmp_path):
    cfg = StudyConfig(model="oracle", analyses=["exact"], n_maps=3, n_draws=100, options=CHEAP)
    run_study(cfg, tmp_path, progress=False)
    first = load_results(tmp_path, "exact")
    done = []
    report = run_study(StudyConfig(**{**cfg.__dict__, "analyses": ["exact", "power"]}),
                       tmp_path, progress=False, on_result=done.append)  # fmt: skip
    assert sorted(done) == sorted(str(result_path(tmp_path, "power", i)) for i in range(3))
    assert set(report["analyses"]) == {"exact", "power"}
    for a, b in zip(load_results(tmp_path, "exact"), first, strict=True):
        np.testing.assert_array_equal(a["draws"], b["draws"])
    assert read_json(tmp_path / "study.json")["analyses"] == ["exact", "power"]


def test_dask_local_cluster_gives_the_serial_results(tmp_path):
    distributed = pytest.importorskip("distributed")
    cfg = StudyConfig(model="oracle", analyses=["exact"], n_maps=4, n_draws=100, options=CHEAP)
    run_study(cfg, tmp_path / "serial", progress=False)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster) as client:
            run_study(cfg, tmp_path / "dask", executor=client.get_executor(), progress=False)
    a, b = load_results(tmp_path / "serial", "exact"), load_results(tmp_path / "dask", "exact")
    assert len(a) == len(b) == 4
    for r, s in zip(a, b, strict=True):
        np.testing.assert_allclose(r["draws"], s["draws"])
        assert float(r["credibility"]) == pytest.approx(float(s["credibility"]))


@pytest.fixture(scope="module")
def exact_studies(tmp_path_factory):
    """100 maps: the exact and power-spectrum posteriors, and the exact likelihood squared
    (tempered by 0.5)."""
    root = tmp_path_factory.mktemp("coverage")
    base = {
        "model": "oracle",
        "analyses": ["exact"],
        "n_maps": 100,
        "n_draws": 400,
        "options": CHEAP,
    }
    calibrated = run_study(StudyConfig(**{**base, "analyses": ["exact", "power"]}),
                           root / "exact", progress=False, workers=2)  # fmt: skip
    # the exact analysis takes no temperature option; temper it through the likelihood
    over = StudyConfig(**{**base, "options": {**CHEAP, "temperature": 0.5}})
    overconfident = run_study(over, root / "tempered", progress=False, workers=2)
    return root, calibrated["analyses"], overconfident["analyses"]["exact"]


def test_exact_posterior_is_calibrated_and_the_power_spectrum_nearly(exact_studies):
    _, reports, _ = exact_studies
    rep = reports["exact"]
    # every check passes, but 100 maps cannot resolve a coverage deviation of 0.1: their
    # 99 % bands let a curve stray 0.17 from the diagonal
    assert rep["verdict"] == "not enough maps", json.dumps(
        {k: rep[k] for k in ("ranks", "z_score")})  # fmt: skip
    assert not rep["calibrated"]
    assert rep["min_detectable_deviation"] == pytest.approx(0.17)
    assert 280 < rep["maps_needed"] < 320
    assert rep["hpd_coverage"]["max_deviation"] < 0.15
    # the located grids allow up to 1 % on their outer ring (at 3.4-4.5 sigma; a Gaussian
    # puts 0.15 % there), the adaptive grid 1e-3
    assert rep["max_edge_mass"] < 1e-2
    # the power-spectrum reference is an approximation (Gaussian in log P, polynomial mean):
    # close to calibrated, which 100 maps can check to about +-0.15 in coverage
    rep = reports["power"]
    assert rep["hpd_coverage"]["inside_band"] and rep["tarp"]["inside_band"]
    for z in rep["z_score"].values():
        assert abs(z["mean"]) < 3 * z["mean_se"] and abs(z["std"] - 1) < 0.2
    # the power spectrum loses information: wider than the exact posterior, not biased
    vs = reports["power"]["vs_exact"]
    assert all(r > 1.05 for r in vs["width_ratio_mean"].values())
    assert all(abs(b) < 0.5 for b in vs["bias_mean"].values())


def test_tempered_likelihood_is_detected_as_overconfident(exact_studies):
    _, _, rep = exact_studies
    assert rep["verdict"] == "miscalibrated" and not rep["calibrated"]
    assert not rep["hpd_coverage"]["inside_band"]
    assert rep["hpd_coverage"]["signed_area"] < -0.05
    assert all(z["std"] > 1.2 for z in rep["z_score"].values())


def test_temperature_fit_recovers_the_tempering(exact_studies, tmp_path):
    root, _, _ = exact_studies
    calibrated = fit_temperature(load_results(root / "exact", "exact"))
    tempered_results = load_results(root / "tempered", "exact")
    tempered = fit_temperature(tempered_results)
    # the exact likelihood needs no temperature, whether the study ran it tempered or not
    # (results remember their temperature, and the fit is relative to the untempered one)
    assert abs(calibrated["temperature"] - 1) < 3 * calibrated["se"]
    assert abs(tempered["temperature"] - 1) < 3 * tempered["se"]
    # taken at face value, the squared likelihood's posteriors need tau = 2
    face_value = fit_temperature([{**r, "temperature": 1.0} for r in tempered_results])
    assert abs(face_value["temperature"] - 2) < 3 * face_value["se"]
    with pytest.raises(InputError, match="at least 5"):
        fit_temperature(load_results(root / "exact", "exact")[:3])


def test_stored_temperature_is_applied_by_default(tmp_path):
    from diffinfer.diffusion import load_model, save_model
    from diffinfer.inference.posterior import posterior
    from diffinfer.likelihoods.diffusion import DiffusionLikelihood
    from diffinfer.simulators import LognormalSimulator
    from tests.test_emulation import _tiny_model

    path = save_model(_tiny_model(), tmp_path / "m")
    model = load_model(path)
    field = LognormalSimulator(model.field, model.transform).simulate([0.3, 0.8], 1, seed=0)[0]
    plan = DiffusionLikelihood(model, field, terms="l0").plan.description
    store_temperature(path, {"temperature": 1.7, "se": 0.1, "n_maps": 50}, plan, n_noise=1)
    model = load_model(path)  # the weights' checksum still holds
    theta = np.array([[0.3, 0.8]])
    plain = posterior(field, model=model, likelihood="l0", temperature=1.0)
    tempered = posterior(field, model=model, likelihood="l0")
    assert tempered.info["temperature"] == pytest.approx(1.7)
    np.testing.assert_allclose(
        tempered.log_likelihood(theta).detach().numpy(),
        plain.log_likelihood(theta).detach().numpy() / 1.7,
        rtol=1e-6,
    )
    # another term set is not covered by the fit
    assert posterior(field, model=model, likelihood=[0, 1]).info["temperature"] == 1.0
    with pytest.raises(InputError, match="temperature"):
        posterior(field, model=model, likelihood="l0", temperature=-1)


def _tempered_gaussian_results(n: int, tau: float, seed: int) -> list[dict]:
    """n Gaussian posteriors whose truths lie at squared Mahalanobis distance tau chi^2_2."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sd = rng.uniform(0.01, 0.05, 2)
        cov = np.diag(sd**2)
        truth = np.array([0.3, 0.8])
        mean = truth + np.sqrt(tau) * sd * rng.normal(size=2)
        out.append({"index": i, "mean": mean, "truth": truth, "cov": cov})
    return out


def test_the_median_temperature_is_robust_to_a_map_far_from_the_truth():
    from scipy import stats

    results = _tempered_gaussian_results(400, tau=4.0, seed=3)
    mean_fit = fit_temperature(results)
    median_fit = fit_temperature(results, estimator="median")
    assert median_fit["estimator"] == "median" and median_fit["n_maps"] == 400
    for fit in (mean_fit, median_fit):
        assert abs(fit["temperature"] - 4.0) < 3 * fit["se"]
    # the median's asymptotic error: tau sqrt(1/(4n)) / (q f(q)), q the chi^2_2 median
    q = stats.chi2.median(2)
    expected = median_fit["temperature"] * 0.5 / np.sqrt(400) / (q * stats.chi2.pdf(q, 2))
    assert median_fit["se"] == pytest.approx(expected)
    # and it matches the scatter of the estimate over repeated studies
    taus = [fit_temperature(_tempered_gaussian_results(400, 4.0, s), "median")["temperature"]
            for s in range(10, 50)]  # fmt: skip
    assert np.std(taus, ddof=1) == pytest.approx(median_fit["se"], rel=0.35)
    # one posterior a thousand widths from its truth moves the mean, hardly the median
    far = {
        "index": 400,
        "mean": np.array([0.3, 0.8]),
        "truth": np.array([0.3, 0.83]),
        "cov": np.diag([1e-4, 1e-10]),
    }
    broken = [*results, far]
    assert fit_temperature(broken)["temperature"] > 100
    assert fit_temperature(broken, "median")["temperature"] == pytest.approx(
        median_fit["temperature"], rel=0.02
    )
    with pytest.raises(InputError, match="estimator"):
        fit_temperature(results, estimator="mode")


def test_a_study_refuses_to_mix_likelihood_temperatures(tmp_path):
    """A study without a temperature takes the model card's when each map is computed: a
    map at another temperature than the study's existing results is refused, naming both
    and the fix, before its posterior is computed."""
    cfg = StudyConfig(model="oracle", analyses=["exact"], n_maps=2, n_draws=100, options=CHEAP)
    run_study(cfg, tmp_path, progress=False)
    hotter = StudyConfig(**{**cfg.__dict__, "options": {**CHEAP, "temperature": 2.0}})
    with pytest.raises(InputError, match=r"temperature 1, this map's would be at 2 .*"
                                         r"--set temperature=1"):  # fmt: skip
        run_maps(dict(hotter.__dict__), "exact", [2], str(tmp_path))
    assert not result_path(tmp_path, "exact", 2).exists()
    # the same temperature grows the study as before
    run_maps({**cfg.__dict__}, "exact", [2], str(tmp_path))
    assert result_path(tmp_path, "exact", 2).exists()
