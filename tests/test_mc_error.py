"""The posterior's Monte Carlo error: the estimator against a brute-force scatter, added
timesteps (unbiased, reusing evaluations), the error control of a posterior, its reports and
its bad inputs."""

import math
import warnings

import numpy as np
import pytest
import torch

import diffinfer as di
from diffinfer.calibration.config import StudyConfig
from diffinfer.calibration.results import load_result, result_path
from diffinfer.calibration.study import run_maps
from diffinfer.diffusion import DiffusionModel
from diffinfer.errors import InputError
from diffinfer.inference.mc_control import MonteCarloWarning
from diffinfer.inference.mc_error import QuadraticTerms, design_points, posterior_mc_error
from diffinfer.likelihoods.diffusion import DiffusionLikelihood


@pytest.fixture(scope="module")
def oracle() -> DiffusionModel:
    return DiffusionModel.oracle()


@pytest.fixture(scope="module")
def field(sim):
    return sim.simulate(np.array([0.3, 0.8]), 1, seed=11)[0]


@pytest.mark.parametrize("estimator", ["successive", "iid"])
def test_estimated_error_matches_the_scatter_over_draws(estimator):
    """A Gaussian posterior perturbed by K random linear terms z_k = a_k . theta (the first
    order of any smooth Monte Carlo error): its mean moves by Cov sum_k a_k exactly. Over
    400 draws, the rms of the estimated standard error matches the measured scatter of the
    grid posterior's mean within 10 % (the scatter's own sampling error is 3.5 %)."""
    rng = np.random.default_rng(3)
    g = np.linspace(-5, 5, 41)
    theta = np.stack(np.meshgrid(g, 0.5 * g, indexing="ij"), -1).reshape(-1, 2)
    prec = np.linalg.inv(np.array([[1.0, 0.3], [0.3, 0.25]]))
    base = -0.5 * np.einsum("pi,ij,pj->p", theta, prec, theta)
    K, scale = 8, 0.08
    means, est = [], []
    for _ in range(400):
        a = rng.normal(0, scale, (K, 2))
        terms = theta @ a.T + base[:, None] / K
        lp = terms.sum(1)
        w = np.exp(lp - lp.max())
        w /= w.sum()
        means.append(w @ theta)
        sd = np.sqrt(w @ (theta - w @ theta) ** 2)
        err = posterior_mc_error(theta, w, terms, np.arange(K), estimator=estimator)
        est.append(np.array(err["mean"]) * sd)
    scatter = np.std(means, axis=0)
    rms = np.sqrt(np.mean(np.square(est), axis=0))
    np.testing.assert_allclose(rms, scatter, rtol=0.10)


def test_a_deterministic_likelihood_has_no_error():
    g = np.linspace(-3, 3, 13)
    theta = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    lp = -0.5 * (theta**2).sum(1)
    w = np.exp(lp) / np.exp(lp).sum()
    same = np.repeat(lp[:, None] / 4, 4, axis=1)  # four identical terms: no scatter
    err = posterior_mc_error(theta, w, same, np.arange(4))
    assert err["mean"] == pytest.approx([0, 0], abs=1e-12)


def test_quadratic_terms_are_exact_for_quadratics():
    centre, cov = np.array([0.3, 0.8]), np.array([[4e-4, -1e-4], [-1e-4, 2e-4]])
    design = design_points(centre, cov, np.array([0.1, 0.6]), np.array([0.5, 1.0]))
    assert design.shape == (9, 2)

    def f(t):
        d = t - centre
        return np.stack([3 + 50 * d[:, 0] - 800 * d[:, 0] * d[:, 1],
                         -1e3 * d[:, 1] ** 2 + 2 * d[:, 0]], axis=1)  # fmt: skip

    fit = QuadraticTerms(design, f(design), centre, cov, slice(0, 2))
    probe = centre + np.random.default_rng(0).normal(0, 0.01, (20, 2))  # within 4.5 sd
    np.testing.assert_allclose(fit(probe), f(probe), rtol=1e-8, atol=1e-8)
    assert fit.residual_rms(np.ones(2)) < 1e-8
    # beyond the fit's reach it is constant along each whitened axis: no runaway quadratic
    far = centre + np.array([[1.0, 0.0], [2.0, 0.0]])
    np.testing.assert_allclose(fit(far)[0], fit(far)[1])
    # near the prior edge the design is moved inside the box
    edge = design_points(np.array([0.101, 0.8]), cov, np.array([0.1, 0.6]),
                         np.array([0.5, 1.0]))  # fmt: skip
    assert np.all(edge[:, 0] > 0.1)


def test_added_timesteps_reuse_evaluations_and_stay_unbiased(oracle, field):
    """Added timesteps cost only their own terms at a theta seen before, and the estimate
    with them is unbiased: over 150 seeds, the mean of a log L difference from 8 + 8
    timesteps agrees with the sum of all 1000 terms within 4 standard errors."""
    theta = torch.tensor([[0.3, 0.8], [0.32, 0.79]], dtype=torch.float64)
    like = DiffusionLikelihood(oracle, field, terms="vlb", n_timesteps=8, seed=1)
    like.fast_oracle = False  # count the denoiser calls
    like(theta)
    assert like.n_denoiser_calls == 16
    like.add_timesteps(8)
    assert like.n_timesteps_used == 16 and like.rounds == [8, 8]
    like(theta)
    assert like.n_denoiser_calls == 32  # only the 8 new terms at each of the 2 points
    # every term has the weight w_t / (K q(t)) of one 16-timestep sample
    full = DiffusionLikelihood(oracle, field, terms="vlb", n_timesteps=None, seed=1)
    exact = float(np.diff(full(theta).numpy())[0])
    diffs = []
    for seed in range(150):
        lk = DiffusionLikelihood(oracle, field, terms="vlb", n_timesteps=8, seed=seed)
        lk.add_timesteps(8)
        diffs.append(float(np.diff(lk(theta).numpy())[0]))
    se = np.std(diffs, ddof=1) / math.sqrt(len(diffs))
    assert abs(np.mean(diffs) - exact) < 4 * se


def test_dropping_added_timesteps_restores_the_first_round(oracle, field):
    theta = torch.tensor([[0.3, 0.8], [0.31, 0.79]], dtype=torch.float64)
    like = DiffusionLikelihood(oracle, field, terms="vlb", n_timesteps=8, seed=4)
    before = like(theta)
    like.add_timesteps(24)
    assert not torch.allclose(like(theta), before)
    added = like.plan.timesteps[8:].clone()
    like.drop_added_timesteps()
    assert like.rounds == [8] and like.n_timesteps_used == 8
    torch.testing.assert_close(like(theta), before, rtol=1e-12, atol=1e-9)
    like.add_timesteps(24)  # the seed's generator was rewound: the same timesteps again
    torch.testing.assert_close(like.plan.timesteps[8:], added)


def test_timesteps_cannot_be_added_to_a_fixed_term_set(oracle, field):
    like = DiffusionLikelihood(oracle, field, terms="l0")
    assert not like.adaptive
    with pytest.raises(InputError, match="importance-sampled"):
        like.add_timesteps(8)


def test_posterior_adds_timesteps_until_its_error_is_below_the_tolerance(oracle, field):
    """The oracle's default (16 timesteps, no control variate) has an error of about 1.2
    posterior sd: timesteps are added until the estimate is below mc_tol, and the refined
    posterior lies within a few of its own standard errors of the exact one."""
    post = di.posterior(field, model=oracle, progress=False, mc_tol=0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MonteCarloWarning)
        g = post.grid()
    mc = post.mc_error()
    assert mc["stochastic"] and mc["met"] and max(mc["mean"]) <= 0.25
    assert mc["n_timesteps"] > 16 and len(mc["stages"]) >= 2
    assert max(mc["stages"][0]["mean"]) > 0.25
    exact = di.posterior(field, model=oracle, likelihood="exact", progress=False).grid()
    sd = np.sqrt(np.diag(exact.cov()))
    # the oracle's VLB differs from the exact likelihood by about 0.1 sd on average
    assert np.all(np.abs(g.mean() - exact.mean()) / sd < 0.25 * 4 + 0.3)
    summary = post.summary()
    assert summary["Omega_m"]["mcse_mean"] == pytest.approx(
        mc["mean"][0] * summary["Omega_m"]["std"]
    )
    samples = post.sample(100)
    assert samples.info["diagnostics"]["mc_error"]["n_timesteps"] == mc["n_timesteps"]
    attrs = samples.to_arviz()["posterior"].attrs
    assert attrs["likelihood_mcse_mean_in_sd"] == pytest.approx(mc["mean"])


def test_a_spent_budget_warns_naming_the_map_and_the_error(oracle, field):
    post = di.posterior(field, model=oracle, progress=False, mc_tol=0.05, max_timesteps=16)
    post.name = "map 7"
    with pytest.warns(
        MonteCarloWarning,
        match=r"map 7: .* Monte Carlo error is \d\.\d\d / "
        r"\d\.\d\d posterior sd .*max_timesteps=16",
    ):
        post.grid()
    assert not post.mc_error()["met"]
    assert post.mc_error()["n_timesteps"] == 16


def test_references_report_zero_error_and_ignore_the_tolerance(field):
    post = di.posterior(field, likelihood="exact", progress=False, mc_tol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MonteCarloWarning)
        post.grid()
    assert post.mc_error() == {"mean": [0.0, 0.0], "sd": [0.0, 0.0], "stochastic": False}
    assert post.summary()["sigma_8"]["mcse_mean"] == 0.0


@pytest.mark.parametrize(("options", "match"), [
    ({"mc_tol": 0}, "mc_tol must be a number > 0"),
    ({"mc_tol": -0.1}, "mc_tol must be a number > 0"),
    ({"mc_tol": float("nan")}, "mc_tol must be"),
    ({"max_timesteps": 8, "n_timesteps": 16}, "max_timesteps=8 is below n_timesteps=16"),
    ({"max_timesteps": 4}, "max_timesteps=4 is below the 16 timesteps"),
    ({"max_timesteps": 0}, "max_timesteps must be"),
    ({"mc_refine": "quadratic"}, "mc_refine must be one of"),
])  # fmt: skip
def test_bad_error_control_options_are_refused(oracle, field, options, match):
    with pytest.raises(InputError, match=match):
        di.posterior(field, model=oracle, progress=False, **options)


def test_a_study_gives_every_map_the_users_seed_and_records_the_error(tmp_path):
    """Map i of a study gets the study's likelihood seed (what a user gets), and its result
    records the Monte Carlo error; an analysis computed with the former per-map seeds is
    not grown with the new ones."""
    cfg = StudyConfig(model="oracle", analyses=["diffusion"], n_maps=2, n_draws=100)
    for i in range(2):
        run_maps(dict(cfg.__dict__), "diffusion", [i], str(tmp_path))
    r = load_result(result_path(tmp_path, "diffusion", 1))
    assert int(r["likelihood_seed"]) == 0
    assert r["mc_error_mean"].shape == (2,) and np.all(np.isfinite(r["mc_error_mean"]))
    assert int(r["n_timesteps"]) >= 16 and int(r["network_calls"]) >= 0
    # an old result (no likelihood_seed) blocks growth with a clear message
    old = dict(np.load(result_path(tmp_path, "diffusion", 0)))
    del old["likelihood_seed"]
    np.savez(result_path(tmp_path, "diffusion", 0), **old)
    result_path(tmp_path, "diffusion", 1).unlink()
    with pytest.raises(InputError, match="likelihood seed seed \\+ map index"):
        run_maps(dict(cfg.__dict__), "diffusion", [1], str(tmp_path))


# ------------------------------------------------------------------ goodness of fit
def test_predictive_p_values_of_fresh_draws_are_uniform():
    """For vectors from one distribution (correlated, skewed), the p-value of a fresh draw
    among 150 simulated ones is uniform: 5 % +- its binomial error fall below 0.05."""
    from scipy import stats

    from diffinfer.inference.goodness_of_fit import predictive_p_value

    rng = np.random.default_rng(1)
    mix = rng.normal(size=(6, 6))

    def draw(n):
        return rng.gamma(4.0, size=(n, 6)) @ mix

    p = np.array([predictive_p_value(draw(1)[0], draw(150))[0] for _ in range(300)])
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert abs(np.mean(p < 0.05) - 0.05) < 3 * np.sqrt(0.05 * 0.95 / 300)


def test_goodness_of_fit_flags_undeclared_noise_and_passes_declared(sim, field):
    from diffinfer.inference.goodness_of_fit import GoodnessOfFitWarning

    post = di.posterior(field, likelihood="exact", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GoodnessOfFitWarning)
        clean = post.diagnostics()["goodness_of_fit"]
    assert clean["available"] and clean["p_value"] >= 0.05 and clean["n_sims"] == 200
    y = sim.transform.forward(field).numpy()
    noisy = sim.transform.inverse(y + 2 * np.random.default_rng(0).normal(size=y.shape))
    post = di.posterior(noisy.numpy(), likelihood="exact", progress=False)
    post.name = "noisy.npy"
    with pytest.warns(GoodnessOfFitWarning, match=r"noisy.npy: unlike the model's maps .*"
                                                   r"p = 0.00\d+ .*noise_sigma"):  # fmt: skip
        assert post.goodness_of_fit()["p_value"] < 0.01
    declared = di.posterior(noisy.numpy(), likelihood="exact", noise_sigma=2.0, progress=False)
    assert declared.goodness_of_fit()["p_value"] >= 0.05


def test_goodness_of_fit_needs_a_simulator_of_the_models_maps():
    from diffinfer.diffusion.checkpoint import load_model

    rho = np.load("examples/nbody64/map1.npy")
    post = di.posterior(rho, model=load_model("nbody64"), progress=False)
    assert post.goodness_of_fit() == {
        "available": False,
        "reason": "no fast simulator of this model's maps (log-normal maps only)",
    }


def test_goodness_of_fit_refuses_too_few_simulated_maps(field):
    post = di.posterior(field, likelihood="exact", progress=False)
    with pytest.raises(InputError, match="n_sims must be"):
        post.goodness_of_fit(n_sims=5)


def _assert_the_grid_holds_every_timestep(post):
    """The grid's evaluated log density equals the posterior's own log_prob (every added
    timestep evaluated, none fitted) at five of its points; returns the grid."""
    g = post.grid()
    base = g.base or g
    pts, inside = g.evaluated_points()
    cells = np.flatnonzero(inside)[:: max(1, inside.sum() // 5)][:5]
    with torch.no_grad():
        direct = post.log_prob(torch.as_tensor(pts[cells])).numpy()
    np.testing.assert_allclose(base.log_density.ravel()[cells], direct, rtol=0, atol=1e-6)
    return g


def test_where_the_fits_do_not_settle_the_added_terms_are_evaluated_on_the_grid(
    oracle, field, monkeypatch
):
    """A round whose fitted posterior lands far outside its design (forced here for every
    round) is not trusted: the added timesteps are evaluated at the grid's points instead
    (the grid holds the likelihood of all K timesteps there, no fit), and rounds go on until
    the tolerance is met. The oracle without a control variate is noisy (0.36 sd at 128
    timesteps), hence mc_tol=0.5."""
    from diffinfer.inference import mc_control

    monkeypatch.setattr(mc_control, "GROSS_NARROWING", 10.0)  # no fit is ever trusted
    post = di.posterior(field, model=oracle, n_timesteps=8, seed=0, mc_tol=0.5,
                        progress=False)  # fmt: skip
    mc = post.mc_error()
    assert mc["direct"] and not mc["fit_settled"] and mc["met"]
    assert [s.get("direct", False) for s in mc["stages"]][-1] and mc["n_timesteps"] > 8
    assert max(mc["mean"]) < max(mc["stages"][0]["mean"])
    g = _assert_the_grid_holds_every_timestep(post)
    exact = di.posterior(field, likelihood="exact", progress=False).grid()
    sd = np.sqrt(np.diag(exact.cov()))
    assert np.all(np.abs(g.mean() - exact.mean()) < 3 * 0.5 * sd)


def test_lack_of_fit_separates_a_non_quadratic_likelihood_from_monte_carlo_noise():
    """Terms that are quadratic in theta plus independent noise per term have a residual but
    no lack of fit (the successive differences over t estimate the noise); terms that share
    a shape beyond quadratic have a lack of fit equal to that shape's residual, noise or
    not."""
    rng = np.random.default_rng(5)
    centre, cov = np.array([0.3, 0.8]), np.diag([1e-4, 4e-4])
    design = design_points(centre, cov, np.array([0.1, 0.6]), np.array([0.5, 1.0]))
    u = (design - centre) / np.sqrt(np.diag(cov))
    n, w, t = 400, np.full(400, 1 / 400), np.sort(rng.uniform(0, 1, 400))
    quad = (-0.5 * (u**2).sum(1))[:, None] * np.ones(n)
    noise = rng.normal(0, 1.0, (len(design), n))
    shape = 0.03 * u[:, 0] ** 2 * u[:, 1] ** 2  # not a quadratic on the 3 x 3 design
    expected = QuadraticTerms(design, shape[:, None], centre, cov, slice(0, 1)).residual_rms(
        np.ones(1)
    )
    assert expected > 0.2
    lacks, residuals = [], []
    for k in (0.0, 1.0):
        values = quad + noise + k * shape[:, None]
        fit = QuadraticTerms(design, values, centre, cov, slice(0, n))
        lacks.append(fit.lack_of_fit(w, t))
        residuals.append(fit.residual_rms(w))
    assert residuals[0] > 0.01 and lacks[0] < 0.5 * residuals[0]
    assert lacks[1] == pytest.approx(expected, rel=0.1)


def test_a_fit_that_lacks_fit_is_replaced_by_the_grid(oracle, field, monkeypatch):
    """On the oracle (no control variate) the fitted round at 256 timesteps lacks fit by
    about 0.45 nats, above FIT_RESIDUAL_MAX: the added timesteps are then evaluated on the
    grid itself. With the threshold lifted the fits are kept."""
    from diffinfer.inference import mc_control

    post = di.posterior(field, model=oracle, progress=False, mc_tol=0.25)
    mc = post.mc_error()
    lack = [s["fit_lack_of_fit_nats"] for s in mc["stages"] if "fit_lack_of_fit_nats" in s]
    assert max(lack) > mc_control.FIT_RESIDUAL_MAX and mc["direct"] and not mc["fit_settled"]
    monkeypatch.setattr(mc_control, "FIT_RESIDUAL_MAX", math.inf)
    kept = di.posterior(field, model=oracle, progress=False, mc_tol=0.25).mc_error()
    assert not kept["direct"] and kept["fit_settled"]


def test_a_late_switch_to_the_grid_starts_again_from_the_first_round(oracle, field, monkeypatch):
    """Fits that lack fit only once more timesteps were added than the grid's budget
    (DIRECT_MAX_FACTOR x the first round, lowered here to 4 x 16) drop those timesteps: the
    posterior is then the one mc_refine="grid" gives, the same timesteps on the same grids."""
    from diffinfer.inference import mc_control

    monkeypatch.setattr(mc_control, "DIRECT_MAX_FACTOR", 4)
    post = di.posterior(field, model=oracle, progress=False, mc_tol=0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MonteCarloWarning)
        g = post.grid()
        grid = di.posterior(field, model=oracle, progress=False, mc_tol=0.25, mc_refine="grid")
        g_grid = grid.grid()
    mc = post.mc_error()
    fitted = [s["n_timesteps"] for s in mc["stages"] if "fit_lack_of_fit_nats" in s]
    assert mc["direct"] and max(fitted) > 64 and mc["n_timesteps"] <= 64
    assert mc["n_timesteps"] == grid.mc_error()["n_timesteps"]
    np.testing.assert_allclose(g.mean(), g_grid.mean(), rtol=1e-6)
    np.testing.assert_allclose(g.cov(), g_grid.cov(), rtol=1e-5)


def test_a_direct_round_lays_out_a_fresh_grid_where_re_tabulating_costs_more(
    oracle, field, monkeypatch
):
    """A direct round re-tabulates the last grid's points only where their missing terms cost
    no more than a fresh aligned grid's (n_aligned^2 points x every term): from the adaptive
    grid (hundreds of points) the round at 32 timesteps lays out a fresh 8^2 grid instead, and
    the posterior still holds every timestep at its points."""
    from diffinfer.inference import mc_control

    control = mc_control.MonteCarloControl
    retabulated, regrids = [], []
    original_retabulated, original_regrid = control._retabulated, control._regrid

    def spy_retabulated(self, g, upsample):
        if self._direct:
            pts, inside = g.evaluated_points()
            retabulated.append((self._missing_terms(pts[inside]), self._fresh_grid_terms()))
        return original_retabulated(self, g, upsample)

    def spy_regrid(self, g, widen):
        regrids.append((len(g.evaluated_points()[0]), self._chunked.n_timesteps_used))
        return original_regrid(self, g, widen)

    monkeypatch.setattr(control, "_retabulated", spy_retabulated)
    monkeypatch.setattr(control, "_regrid", spy_regrid)
    post = di.posterior(field, model=oracle, n_timesteps=8, seed=0, mc_tol=0.5, aligned=False,
                        mc_refine="grid", progress=False)  # fmt: skip
    mc = post.mc_error()
    assert mc["direct"] and mc["met"] and mc["n_timesteps"] > 32
    assert all(missing <= fresh for missing, fresh in retabulated)
    assert retabulated[0] == (0, 64 * 8)  # the 8 first-round terms are all there already
    points, k = regrids[0]
    assert points > 64 * 32 / (32 - 8) and k == 32  # the adaptive grid: a fresh one is cheaper
    assert post.grid().strategy == "aligned"
    g = _assert_the_grid_holds_every_timestep(post)
    exact = di.posterior(field, likelihood="exact", progress=False).grid()
    sd = np.sqrt(np.diag(exact.cov()))
    assert np.all(np.abs(g.mean() - exact.mean()) < 3 * 0.5 * sd)


def test_mc_refine_grid_evaluates_the_added_terms_on_the_grid_from_the_start(oracle, field):
    """``mc_refine="grid"`` skips the fitted quadratics: every added timestep is evaluated at
    every grid point (the grid then holds the likelihood of all K timesteps, which the
    posterior's own log_prob reproduces), and rounds go on until the tolerance is met."""
    post = di.posterior(field, model=oracle, n_timesteps=8, seed=0, mc_tol=0.5,
                        mc_refine="grid", progress=False)  # fmt: skip
    mc = post.mc_error()
    assert mc["refine"] == "grid" and mc["direct"] and mc["met"] and mc["n_timesteps"] > 8
    assert all(s.get("direct", False) for s in mc["stages"][1:])
    assert "redesigns" not in mc["stages"][-1]  # no fitted round was ever made
    assert post.info["provenance"]["settings"]["mc_refine"] == "grid"
    _assert_the_grid_holds_every_timestep(post)
