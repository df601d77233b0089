"""The posterior API on the exact likelihood: grid, emcee and NUTS agree; samples convert."""

from __future__ import annotations

import numpy as np
import pytest

from diffinfer.diffusion import DiffusionModel
from diffinfer.errors import DataFileError, InputError
from diffinfer.inference.posterior import posterior
from diffinfer.inference.samples import Samples
from diffinfer.simulators import LognormalSimulator

TRUTH = np.array([0.3, 0.8])


@pytest.fixture(scope="module")
def density(sim) -> np.ndarray:
    return sim.simulate(TRUTH, 1, seed=4)[0]


@pytest.fixture(scope="module")
def reference(density):
    """The grid posterior of the exact likelihood (checked against a dense grid elsewhere)."""
    return posterior(density, model=None, likelihood="exact", method="grid").summary()


def test_grid_summary_map_and_samples(density, reference, tmp_path):
    import arviz as az

    post = posterior(density, model=None, likelihood="exact", method="grid")
    samples = post.sample(4000)
    for name, ref in reference.items():
        s = samples.summary()[name]
        assert abs(s["mean"] - ref["mean"]) < 0.05 * ref["std"]
        assert s["std"] == pytest.approx(ref["std"], rel=0.05)
        assert ref["q16"] < ref["median"] < ref["q84"]
    # with a uniform prior the MAP is the maximum-likelihood estimate (Fisher scoring)
    sim = LognormalSimulator()
    mle = sim.maximum_likelihood(sim.transform.forward(density)[None])
    assert np.all(np.abs(post.map() - mle.theta[0]) < 0.05 * mle.std[0])
    assert post.diagnostics()["n_evaluations"] < 5000
    assert list(az.summary(samples.to_arviz()).index) == ["Omega_m", "sigma_8", "S_8"]
    assert samples.to_getdist().getParamNames().list() == ["Omega_m", "sigma_8", "S_8"]
    path = samples.save(tmp_path / "s.npz")
    back = Samples.load(path)
    np.testing.assert_array_equal(back.theta, samples.theta)
    assert back.info["likelihood"] == "exact log-normal likelihood"
    (tmp_path / "broken.npz").write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataFileError, match="cannot read samples"):
        Samples.load(tmp_path / "broken.npz")


@pytest.mark.slow  # the default run checks emcee in test_agreement.py (100 s each)
def test_emcee_agrees_with_the_grid(density, reference):
    post = posterior(density, model=None, likelihood="exact", method="emcee", seed=1)
    samples = post.sample(4000)
    diag = samples.info["diagnostics"]
    assert diag["converged"] and diag["steps"] >= 50 * diag["autocorrelation_time"]
    for name, ref in reference.items():
        s = samples.summary()[name]
        assert abs(s["mean"] - ref["mean"]) < 0.1 * ref["std"]
        assert s["std"] == pytest.approx(ref["std"], rel=0.1)


@pytest.mark.slow
def test_nuts_agrees_with_the_grid_and_converts_to_arviz_and_getdist(density, reference):
    import arviz as az

    post = posterior(density, model=None, likelihood="exact", method="nuts", seed=2,
                     num_chains=2, warmup_steps=150)  # fmt: skip
    samples = post.sample(600)
    assert samples.theta.shape == (2, 300, 2)
    idata = samples.to_arviz()
    rhat = az.rhat(idata)
    assert all(float(rhat[n]) < 1.05 for n in ("Omega_m", "sigma_8"))
    for name, ref in reference.items():
        s = samples.summary()[name]
        assert abs(s["mean"] - ref["mean"]) < 0.25 * ref["std"]
        assert s["std"] == pytest.approx(ref["std"], rel=0.2)
    mc = samples.to_getdist()
    assert mc.getParamNames().list() == ["Omega_m", "sigma_8", "S_8"]
    assert mc.mean("Omega_m") == pytest.approx(samples.summary()["Omega_m"]["mean"])


def test_posterior_with_the_oracle_diffusion_likelihood(density, reference):
    post = posterior(density, model=DiffusionModel.oracle(), likelihood="vlb",
                     method="grid", n_timesteps=64, n_coarse=12, n_fine=16)  # fmt: skip
    s = post.summary()
    for name, ref in reference.items():
        assert abs(s[name]["mean"] - ref["mean"]) < 0.6 * ref["std"]
        assert s[name]["std"] == pytest.approx(ref["std"], rel=0.25)


def test_posterior_bad_input(density):
    with pytest.raises(InputError, match="method"):
        posterior(density, model=None, likelihood="exact", method="hmc")
    with pytest.raises(InputError, match="unknown option"):
        posterior(density, model=None, likelihood="exact", method="grid", n_walkers=8)
    with pytest.raises(InputError, match="NaN"):
        posterior(np.full((64, 64), np.nan), model=None, likelihood="exact")


def test_infer_command_writes_samples_summary_and_triangle(density, tmp_path, capsys):
    import json

    from diffinfer.cli import main
    from diffinfer.plots import triangle

    np.save(tmp_path / "map.npy", density)
    out = tmp_path / "out"
    argv = [str(tmp_path / "map.npy"), "--model", "none", "--likelihood", "exact",
            "--truth", "0.3", "0.8", "--out", str(out)]  # fmt: skip
    assert main(["infer", *argv]) == 0
    printed = capsys.readouterr().out
    assert "Omega_m" in printed and "truth" in printed
    # how the grid was built is part of the summary
    assert "grid adaptive" in printed and "likelihood evaluations" in printed
    report = json.loads((out / "summary.json").read_text())
    assert report["diagnostics"]["strategy"] == "adaptive"  # the exact likelihood is cheap
    assert report["truth"] == {"Omega_m": 0.3, "sigma_8": 0.8}
    assert abs(report["summary"]["Omega_m"]["mean"] - 0.3) < 4 * report["summary"]["Omega_m"]["std"]
    assert Samples.load(out / "samples.npz").flat.shape == (4000, 2)
    # the derived S_8 with its truth, GetDist chains, and what made the result
    assert "S_8" in printed and report["summary"]["S_8"]["std"] > 0
    from getdist import loadMCSamples

    chains = loadMCSamples(str(out / "chains" / "samples"), settings={"ignore_rows": 0})
    assert chains.numrows == 4000 and chains.getParamNames().list()[-1] == "S_8"
    prov = report["provenance"]
    assert prov["likelihood"] == "exact" and prov["diffinfer"] and prov["torch"]
    assert (out / "triangle.png").stat().st_size > 10_000
    a = Samples.load(out / "samples.npz")
    b = posterior(density, model=DiffusionModel.oracle(), likelihood="vlb", n_timesteps=32,
                  n_coarse=12, n_fine=12).sample(2000)  # fmt: skip
    path = triangle([a, b], tmp_path / "both.png", labels=["exact", "diffusion (oracle)"],
                    truth=TRUTH)  # fmt: skip
    assert path.stat().st_size > 10_000
    # the power-spectrum posterior beside the exact one, as the README's main job shows them
    argv = [str(tmp_path / "map.npy"), "--model", "none", "--likelihood", "power",
            "--reference", "exact", "--out", str(tmp_path / "two")]  # fmt: skip
    assert main(["infer", *argv]) == 0
    report = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert report["likelihood"].startswith("power-spectrum")
    assert report["reference"]["likelihood"] == "exact log-normal likelihood"
    # the power spectrum is a compression of the map: never more precise than the exact
    exact = report["reference"]["summary"]
    assert report["summary"]["sigma_8"]["std"] > 0.9 * exact["sigma_8"]["std"]
    assert (tmp_path / "two" / "samples_exact.npz").is_file()
    assert main(["infer", str(tmp_path / "absent.npy"), "--model", "none", "--out", "x"]) == 2


def test_top_level_call(density):
    import diffinfer

    samples = diffinfer.posterior(density, model=None, likelihood="exact").sample(500)
    assert isinstance(samples, diffinfer.Samples) and samples.flat.shape == (500, 2)


def test_sbi_style_sample_shape_and_len(density):
    post = posterior(density, model=None, likelihood="exact")
    a, b = post.sample((500,)), post.sample(500)
    assert len(a) == len(b) == 500
    np.testing.assert_array_equal(a.theta, b.theta)  # same seed, same draws
    with pytest.raises(InputError, match=r"sample shape must be \(n,\)"):
        post.sample((10, 2))
