"""What a user of sbi, emcee, Pyro and ArviZ expects: progress bars on long jobs, sample
shapes, a normalised log_prob, the sampler objects, the truth carried with the draws, LaTeX
labels, and the same options on the commands that compute posteriors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import diffinfer as di
import diffinfer.progress
from diffinfer.cli import main
from diffinfer.fields import FieldConfig, downsample
from diffinfer.inference.samples import Samples, arviz_labeller
from diffinfer.likelihoods.diffusion import DiffusionLikelihood
from diffinfer.progress import EvaluationBar
from diffinfer.simulators import LognormalSimulator

THETA = np.array([0.28, 0.82])


@pytest.fixture(scope="module")
def density() -> np.ndarray:
    return LognormalSimulator().simulate(THETA, 1, seed=7)[0]


@pytest.fixture()
def advances(monkeypatch) -> list[float]:
    """Every amount a progress bar is advanced by, in order."""
    record: list[float] = []
    original = EvaluationBar.advance

    def advance(self, amount: float) -> None:
        record.append(float(amount))
        original(self, amount)

    monkeypatch.setattr(EvaluationBar, "advance", advance)
    return record


def test_a_chunked_likelihood_moves_the_bar_within_the_first_evaluation(
    density, advances, monkeypatch, capsys
):
    """The network path (the oracle called like a network: denoiser calls in chunks) advances
    the bar after each chunk, so it moves before the first theta point is finished, and the
    bar's count ends equal to the posterior's evaluations."""
    monkeypatch.setattr(DiffusionLikelihood, "fast_oracle", False)
    monkeypatch.setattr(diffinfer.progress, "SHOW_AFTER", 0.0)
    post = di.posterior(density, model="oracle", n_timesteps=16, max_batch=4, seed=1,
                        max_timesteps=16, mc_tol=10.0)  # fmt: skip
    post.grid()
    # 16 timesteps x 1 noise draw per theta point, 4 calls per chunk: a quarter point each
    assert advances[0] == pytest.approx(0.25)
    assert sum(advances) == pytest.approx(post.n_evaluations)
    err = capsys.readouterr().err
    assert "posterior (grid)" in err and "evaluations" in err


def test_progress_false_is_silent(density, monkeypatch, capsys):
    monkeypatch.setattr(diffinfer.progress, "SHOW_AFTER", 0.0)
    di.posterior(density, model="oracle", progress=False).grid()
    assert capsys.readouterr().err == ""
    di.posterior(density, model=None, likelihood="exact").grid()
    assert "posterior (grid)" in capsys.readouterr().err


def test_a_direct_likelihood_call_shows_its_own_bar_unless_told_not_to(
    density, monkeypatch, capsys
):
    monkeypatch.setattr(DiffusionLikelihood, "fast_oracle", False)
    monkeypatch.setattr(diffinfer.progress, "SHOW_AFTER", 0.0)
    model = di.load_model("oracle")
    theta = np.tile(THETA, (20, 1))
    loud = DiffusionLikelihood(model, density, terms="vlb", n_timesteps=16, max_batch=64)
    quiet = DiffusionLikelihood(model, density, terms="vlb", n_timesteps=16, max_batch=64,
                                progress=False)  # fmt: skip
    a = loud(theta)  # 320 denoiser calls: above PROGRESS_MIN_CALLS
    assert "likelihood" in capsys.readouterr().err
    b = quiet(theta)
    assert capsys.readouterr().err == ""
    assert torch_allclose(a, b)


def torch_allclose(a, b) -> bool:
    return bool(np.allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-9))


def test_normalised_log_prob_integrates_to_one_and_differs_by_a_constant(density):
    post = di.posterior(density, model=None, likelihood="exact", progress=False)
    g = post.grid()
    centre, sd = g.mean(), np.sqrt(np.diag(g.cov()))
    # the unnormalised and normalised densities differ by a constant near the mode (the
    # normalised one is the grid's cubic interpolation: 0.05 nats)
    pts = centre + np.array([[0, 0], [1, 0], [0, 1], [-1, 0.5], [0.5, -1]]) * sd
    diff = (post.log_prob(pts, normalized=True) - post.log_prob(pts)).numpy()
    assert np.ptp(diff) < 0.05, diff
    # it integrates to 1 (midpoint rule over +-8 sd, 200^2 points)
    u = np.linspace(-8, 8, 201)
    mid = 0.5 * (u[1:] + u[:-1])
    gx, gy = np.meshgrid(centre[0] + mid * sd[0], centre[1] + mid * sd[1], indexing="ij")
    lp = post.log_prob(np.stack([gx.ravel(), gy.ravel()], 1), normalized=True).numpy()
    area = (u[1] - u[0]) ** 2 * sd[0] * sd[1]
    assert np.exp(lp).sum() * area == pytest.approx(1.0, abs=0.01)


def test_sample_shapes_and_len(density):
    post = di.posterior(density, model=None, likelihood="exact", progress=False)
    assert len(post.sample((300,))) == 300
    assert len(post.sample(200)) == 200
    with pytest.raises(di.InputError, match=r"\(n,\)"):
        post.sample((10, 2))


@pytest.mark.slow
def test_emcee_and_pyro_objects_are_reachable(density):
    import emcee
    from pyro.infer import MCMC

    post = di.posterior(density, model=None, likelihood="exact", method="emcee",
                        n_walkers=8, max_steps=40, progress=False)  # fmt: skip
    with pytest.warns(UserWarning, match="budget"):
        post.sample(50)
    assert isinstance(post.sampler, emcee.EnsembleSampler)
    assert post.sampler.iteration == 40
    assert post.sampler.get_chain().shape == (40, 8, 2)

    post = di.posterior(density, model=None, likelihood="exact", method="nuts", num_chains=2,
                        warmup_steps=10, max_tree_depth=3, progress=False)  # fmt: skip
    s = post.sample(16)
    assert len(post.sampler) == 2 and all(isinstance(m, MCMC) for m in post.sampler)
    z = post.sampler[0].get_samples()["z"]
    assert z.shape == (8, 2)
    # the chains in Samples are the MCMC draws mapped to theta
    np.testing.assert_allclose(s.theta[0], post.prior.from_unconstrained(z).numpy())


def test_truth_travels_with_the_samples(tmp_path):
    rng = np.random.default_rng(0)
    s = Samples(rng.normal(THETA, 0.01, (2, 50, 2)), "emcee", truth=THETA)
    assert "truth=[0.28, 0.82]" in repr(s) and "chains=2" in repr(s)
    s.save(tmp_path / "s.npz")
    np.testing.assert_array_equal(Samples.load(tmp_path / "s.npz").truth, THETA)
    assert s.to_arviz().posterior.attrs["truth"] == [0.28, 0.82]
    with pytest.raises(di.InputError, match="truth"):
        Samples(rng.normal(THETA, 0.01, (50, 2)), "grid", truth=[0.3, np.nan])


def test_arviz_labeller_writes_latex(density):
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    s = Samples(np.random.default_rng(1).normal(THETA, 0.01, (2, 100, 2)), "emcee")
    axes = az.plot_trace(s.to_arviz(), labeller=arviz_labeller())
    titles = [ax.get_title() for ax in np.ravel(axes)]
    assert any(r"\Omega" in t for t in titles) and any(r"\sigma" in t for t in titles)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_downsample_is_a_block_mean():
    a = np.arange(16.0).reshape(4, 4)
    np.testing.assert_allclose(downsample(a, 2), [[2.5, 4.5], [10.5, 12.5]])
    stack = np.random.default_rng(2).lognormal(size=(3, 8, 8))
    out = downsample(stack, 4)
    assert out.shape == (3, 2, 2)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), stack.mean(axis=(1, 2)), rtol=1e-12)
    with pytest.raises(di.InputError, match="divide"):
        downsample(a, 3)


@pytest.fixture(scope="module")
def big_map(tmp_path_factory):
    """A 128^2 log-normal map of the default 500 Mpc/h box."""
    sim = LognormalSimulator(FieldConfig(n_pix=128))
    path = tmp_path_factory.mktemp("maps") / "big.npy"
    np.save(path, sim.simulate(THETA, 1, seed=3)[0])
    return path


def test_infer_options_match_calibrate(big_map, tmp_path, capsys):
    """infer takes --set, --temperature, --threads, --no-progress, --downsample; the truth
    goes into samples.npz."""

    def argv(out, *extra):
        return ["infer", str(big_map), "--model", "none", "--likelihood", "exact",
                "--downsample", "2", "--set", "n_coarse=10", "--set", "n_fine=10",
                "--threads", "1", "--no-progress", "--n-samples", "300", *extra,
                "--out", str(out)]  # fmt: skip

    out = tmp_path / "run"
    assert main(argv(out, "--temperature", "2", "--truth", *map(str, THETA))) == 0
    captured = capsys.readouterr()
    assert "tempered by 2" in captured.out
    assert "posterior (grid)" not in captured.err
    s = Samples.load(out / "samples.npz")
    np.testing.assert_array_equal(s.truth, THETA)
    report = json.loads((out / "summary.json").read_text())
    assert report["temperature"] == 2.0
    # a temperature of 2 widens the exact posterior by about sqrt(2)
    assert main(argv(tmp_path / "t1")) == 0
    wide = report["summary"]["Omega_m"]["std"]
    narrow = json.loads((tmp_path / "t1" / "summary.json").read_text())["summary"]["Omega_m"]
    assert wide / narrow["std"] == pytest.approx(np.sqrt(2), rel=0.1)


def test_infer_on_a_larger_map_names_the_downsample_option(big_map, tmp_path, capsys):
    assert main(["infer", str(big_map), "--model", "none", "--likelihood", "exact",
                 "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "--downsample 2" in err and "128 x 128" in err
    assert main(["infer", str(big_map), "--downsample", "3", "--model", "none",
                 "--likelihood", "exact", "--out", str(tmp_path / "y")]) == 2  # fmt: skip
    assert "does not divide" in capsys.readouterr().err


def test_infer_set_rejects_an_option_of_the_diffusion_likelihood_for_exact(big_map, tmp_path,
                                                                           capsys):  # fmt: skip
    assert main(["infer", str(big_map), "--downsample", "2", "--model", "none",
                 "--likelihood", "exact", "--set", "n_noise=2",
                 "--out", str(tmp_path / "z")]) == 2  # fmt: skip
    assert "diffusion likelihood" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()


def test_estimate_takes_the_map_as_infer_does(tmp_path, capsys):
    path = tmp_path / "m.npy"
    np.save(path, LognormalSimulator().simulate(THETA, 1, seed=4)[0])
    assert main(["estimate", str(path)]) == 0
    positional = capsys.readouterr().out
    assert main(["estimate", "--map", str(path)]) == 0  # the former spelling still works
    assert capsys.readouterr().out == positional
    assert main(["estimate", str(path), "--map", str(path)]) == 2
    assert "give the map once" in capsys.readouterr().err


def test_help_states_units_and_the_default_timesteps(capsys):
    from diffinfer.likelihoods.terms import DEFAULT_CV_TIMESTEPS, DEFAULT_VLB_TIMESTEPS

    with pytest.raises(SystemExit):
        main(["infer", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "rho/rho_mean" in text and "500 Mpc/h" in text
    assert f"default {DEFAULT_CV_TIMESTEPS} with the control variate" in text
    assert f"else {DEFAULT_VLB_TIMESTEPS}:" in text


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--threads", "0"], "--threads"),
        (["--downsample", "0"], "--downsample"),
        (["--temperature", "-1"], "temperature"),
        (["--set", "n_coarse"], "OPTION=VALUE"),
        (["--set", "n_coarse=.nan"], "finite"),
        (["--set", "n_coarse=nan"], "n_coarse must be an integer"),
        (["--set", "n_corse=10"], "did you mean"),
    ],
)
def test_infer_bad_new_options_are_one_line_errors(big_map, tmp_path, capsys, extra, fragment):
    out = tmp_path / "bad"
    assert main(["infer", str(big_map), "--downsample", "2", "--model", "none",
                 "--likelihood", "exact", *extra, "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not out.exists()


def test_a_bar_reaches_its_end_once_when_the_work_outruns_its_plan():
    """The grid's plan is the locator and 64 points; re-grids and added timesteps come on
    top. The bar must not show 100 % and then grow: it stays short of its end until closed."""
    bar = EvaluationBar(False, "posterior (grid)", 73)
    shown = []
    for _ in range(137):
        bar.advance(1.0)
        shown.append(bar.n / bar.total)
        if len(shown) == 100:
            bar.plan(0)  # a phase that thinks it is done
            shown.append(bar.n / bar.total)
    assert max(shown) < 1.0 and bar.n == 137
    bar.close()
    assert bar.total == bar.n == 137
