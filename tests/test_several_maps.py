"""Several maps of one cosmology: the product of their likelihoods, for the diffusion, exact
and power-spectrum analyses, from arrays, lists and files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffinfer.calibration.compare import two_sample_accuracy
from diffinfer.diffusion import DiffusionModel
from diffinfer.errors import DataFileError, InputError
from diffinfer.inference.posterior import posterior
from diffinfer.likelihoods.diffusion import DiffusionLikelihood

TRUTH = np.array([0.25, 0.85])
THETA = torch.tensor([[0.25, 0.85], [0.23, 0.87], [0.27, 0.83]], dtype=torch.float64)


@pytest.fixture(scope="module")
def maps(sim) -> np.ndarray:
    return sim.simulate(TRUTH, 15, seed=11)


def test_a_stack_of_one_map_is_the_map(maps):
    oracle = DiffusionModel.oracle()
    one = DiffusionLikelihood(oracle, maps[0], terms="vlb", n_timesteps=16, progress=False)
    stack = DiffusionLikelihood(oracle, maps[:1], terms="vlb", n_timesteps=16, progress=False)
    torch.testing.assert_close(stack(THETA), one(THETA))


def test_the_oracle_fast_path_sums_over_the_maps_as_the_denoiser_does(maps):
    oracle = DiffusionModel.oracle()
    fast = DiffusionLikelihood(oracle, maps[:3], terms="vlb", n_timesteps=6, n_noise=2,
                               progress=False)  # fmt: skip
    slow = DiffusionLikelihood(oracle, maps[:3], terms="vlb", n_timesteps=6, n_noise=2,
                               progress=False)  # fmt: skip
    slow.fast_oracle = False
    torch.testing.assert_close(fast(THETA), slow(THETA), rtol=1e-9, atol=1e-6)


def test_the_stacked_likelihood_is_an_unbiased_estimate_of_the_product(sim, maps):
    """Over 20 seeds, log L differences of a stack of 3 maps (oracle, 32 timesteps) average
    to the exact sum of the 3 maps' log-likelihood differences, within 3 standard errors."""
    oracle = DiffusionModel.oracle()
    y = sim.transform.forward(torch.as_tensor(maps[:3]))
    exact = sum(sim.exact_log_prob(one, THETA) for one in y)
    exact = (exact - exact[0]).numpy()[1:]
    diffs = []
    for seed in range(20):
        like = DiffusionLikelihood(oracle, maps[:3], terms="vlb", n_timesteps=32, seed=seed,
                                   progress=False)  # fmt: skip
        v = like(THETA).numpy()
        diffs.append(v[1:] - v[0])
    diffs = np.array(diffs)
    se = diffs.std(axis=0, ddof=1) / np.sqrt(len(diffs))
    assert np.all(np.abs(diffs.mean(axis=0) - exact) < 3 * se + 0.05)


def test_posterior_of_several_maps_from_lists_stacks_and_files(maps, tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"map{i}.npy")
        np.save(paths[-1], maps[i])
    from_files = posterior([str(p) for p in paths], likelihood="exact", progress=False)
    from_stack = posterior(maps[:3], likelihood="exact", progress=False)
    assert from_files.info["n_maps"] == 3 and "product over 3 maps" in from_files.info["likelihood"]
    a, b = from_files.summary(), from_stack.summary()
    assert a["Omega_m"]["mean"] == pytest.approx(b["Omega_m"]["mean"], rel=1e-9)
    # three maps constrain better than one (about 1 / sqrt(3) of the width)
    one = posterior(str(paths[0]), likelihood="exact", progress=False).summary()
    ratio = a["sigma_8"]["std"] / one["sigma_8"]["std"]
    assert 0.4 < ratio < 0.75
    # the power-spectrum likelihood multiplies too
    power = posterior(maps[:3], likelihood="power", progress=False).summary()
    assert abs(power["sigma_8"]["mean"] - TRUTH[1]) < 4 * power["sigma_8"]["std"]
    assert from_files.goodness_of_fit()["available"] is False


def test_several_maps_bad_input(maps, tmp_path):
    with pytest.raises(InputError, match=r"map 1 of the list has shape \(32, 32\)"):
        posterior([maps[0], maps[1][:32, :32]], likelihood="exact")
    with pytest.raises(InputError, match=r"map 1 of the list: .*log10"):
        posterior([maps[0], np.log10(maps[1])], likelihood="exact")
    with pytest.raises(DataFileError, match="map file not found: a"):  # strings are files
        posterior(["a", "b"], likelihood="exact")
    with pytest.raises(InputError, match="no maps given"):
        posterior([], likelihood="exact")
    with pytest.raises(InputError, match="count the prior 2 times"):
        posterior(maps[:2], likelihood="npe")
    np.save(tmp_path / "stack.npy", maps[:4])
    with pytest.raises(InputError, match="stack of 4 maps; pick one with index=I"):
        posterior(str(tmp_path / "stack.npy"), likelihood="exact")


def test_infer_takes_several_map_files(maps, tmp_path, capsys):
    import json

    from diffinfer.cli import main

    for i in range(2):
        np.save(tmp_path / f"m{i}.npy", maps[i])
    out = tmp_path / "out"
    assert (
        main(
            [
                "infer",
                str(tmp_path / "m0.npy"),
                str(tmp_path / "m1.npy"),
                "--model",
                "none",
                "--likelihood",
                "exact",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((out / "summary.json").read_text())
    assert report["n_maps"] == 2 and len(report["map"]) == 2


@pytest.mark.slow  # 75 s: 15 maps x 8 timesteps per theta through the network
def test_fifteen_maps_agree_with_the_exact_joint_posterior(maps):
    exact = posterior(list(maps), likelihood="exact", progress=False).sample(4000)
    diffusion = posterior(maps, progress=False).sample(4000)
    assert two_sample_accuracy(exact.flat, diffusion.flat, seed=0) < 0.6


def test_a_study_with_several_maps_per_theta(tmp_path):
    from diffinfer.calibration.cases import test_case
    from diffinfer.calibration.config import StudyConfig
    from diffinfer.calibration.study import run_study

    one = StudyConfig(model="oracle", analyses=["exact"], n_maps=3, n_draws=100,
                      options={"n_coarse": 12, "n_fine": 16})  # fmt: skip
    three = StudyConfig(**{**one.__dict__, "maps_per_theta": 3})
    maps, theta = test_case(three, 1)
    first, same_theta = test_case(one, 1)
    assert maps.shape == (3, 64, 64) and np.array_equal(theta, same_theta)
    np.testing.assert_array_equal(maps[0], first)  # the one-map study's map comes first
    joint = run_study(three, tmp_path / "three", progress=False)["analyses"]["exact"]
    single = run_study(one, tmp_path / "one", progress=False)["analyses"]["exact"]
    ratio = joint["mean_std"]["sigma_8"] / single["mean_std"]["sigma_8"]
    assert 0.4 < ratio < 0.75  # about 1 / sqrt(3)
    with pytest.raises(InputError, match="estimate the posterior of one map"):
        StudyConfig(model="oracle", analyses=["npe"], maps_per_theta=2)


def test_maps_per_theta_and_n_timesteps_bad_values_are_refused(maps):
    from diffinfer.calibration.config import StudyConfig

    with pytest.raises(InputError, match="maps_per_theta"):
        StudyConfig(model="oracle", analyses=["exact"], maps_per_theta=0)
    with pytest.raises(InputError, match="n_timesteps must be a positive integer, None"):
        DiffusionLikelihood(DiffusionModel.oracle(), maps[0], n_timesteps="many")
    with pytest.raises(InputError, match="n_timesteps"):
        posterior(maps[0], model="oracle", n_timesteps="many")
