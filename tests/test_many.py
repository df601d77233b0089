"""Posteriors of many maps in one pass (diffinfer.posteriors): the network calls of several
maps batched (diffinfer.diffusion.batching.SharedNetwork), each map's posterior the one-map
posterior's."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import diffinfer as di
from diffinfer.diffusion.batching import SharedNetwork, denoise
from diffinfer.errors import DiffinferError, InputError
from diffinfer.inference.many import compute_grids, default_batch
from diffinfer.simulators import LognormalSimulator
from tests.small_models import SMALL_FIELD, small_spectral_model

# a cheap likelihood (4 timesteps, none added) in fp32 on every CPU
OPTIONS = {"n_timesteps": 4, "max_timesteps": 4, "precision": "fp32"}


@pytest.fixture(scope="module")
def model():
    return small_spectral_model(0.2)


@pytest.fixture(scope="module")
def maps() -> np.ndarray:
    sim = LognormalSimulator(SMALL_FIELD)
    thetas = [(0.3, 0.8), (0.2, 0.7), (0.4, 0.9)]
    return np.stack([sim.simulate(np.array(t), 1, seed=10 + i)[0] for i, t in enumerate(thetas)])


def _inputs(model, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 16, 16, generator=g)
    t = torch.randint(1, model.schedule.n_steps + 1, (n,), generator=g)
    theta = torch.tensor([0.3, 0.8]) + 0.05 * torch.randn(n, 2, generator=g)
    return x, t, theta


def test_shared_calls_return_each_threads_own_rows(model):
    """Three threads, calls of different sizes and kinds (with and without the spectral
    part), one thread leaving early: each gets what the network gives its inputs alone,
    and the calls went through fewer, larger batches."""
    shared = SharedNetwork(model, members=3, chunk=7)
    got: dict[tuple[int, int], tuple] = {}
    plan = {0: [(5, False), (3, True), (9, False)], 1: [(2, True)], 2: [(4, False), (6, True)]}

    def member(k: int) -> None:
        with shared.member():
            for r, (n, wiener) in enumerate(plan[k]):
                got[k, r] = shared(_inputs(model, n, 100 * k + r), wiener, "fp32")

    threads = [threading.Thread(target=member, args=(k,)) for k in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    for k, calls in plan.items():
        for r, (n, wiener) in enumerate(calls):
            with torch.no_grad():
                eps, eps_w = denoise(model, _inputs(model, n, 100 * k + r), wiener, "fp32")
            out, out_w = got[k, r]
            assert out.shape == (n, 1, 16, 16)
            torch.testing.assert_close(out, eps, rtol=1e-5, atol=1e-5)
            if wiener:
                torch.testing.assert_close(out_w, eps_w, rtol=1e-5, atol=1e-5)
            else:
                assert out_w is None
    assert shared.evaluations == sum(n for calls in plan.values() for n, _ in calls)
    # 6 requests in 3 rounds; rounds with both kinds run one group each, in chunks of 7
    assert shared.batches < 6 + 3


def test_a_failing_batch_reaches_every_waiting_thread(model):
    shared = SharedNetwork(model, members=2, chunk=16)
    errors: list[BaseException] = []

    def member(n_pix: int) -> None:
        with shared.member():
            x, t, theta = _inputs(model, 2, n_pix)
            try:
                shared((x[..., :n_pix, :n_pix], t, theta), False, "fp32")
            except RuntimeError as exc:  # torch's: the maps cannot be stacked
                errors.append(exc)

    threads = [threading.Thread(target=member, args=(n,)) for n in (16, 12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert len(errors) == 2


def test_posteriors_are_the_one_map_posteriors(model, maps):
    """Batched two maps at a time, each map spends the same evaluations and network calls
    and gets the same posterior as alone (moments within 1 % of its sd)."""
    alone = []
    for m in maps:
        post = di.posterior(m, model=model, progress=False, **OPTIONS)
        post.grid()
        alone.append(post)
    together = di.posteriors(maps, model=model, batch=2, progress=False, **OPTIONS)
    assert [p.name for p in together] == ["map 0", "map 1", "map 2"]
    for a, b in zip(alone, together, strict=True):
        ga, gb = a.grid(), b.grid()
        assert ga.n_evaluations == gb.n_evaluations
        assert a.stochastic.n_denoiser_calls == b.stochastic.n_denoiser_calls
        assert b.stochastic.network is None  # the shared network is detached afterwards
        sd = np.sqrt(np.diag(ga.cov()))
        np.testing.assert_allclose(gb.mean(), ga.mean(), atol=0.01 * sd.min(), rtol=0)
        np.testing.assert_allclose(np.sqrt(np.diag(gb.cov())), sd, rtol=0.01)
    # a list of maps is the same as a stack
    again = di.posteriors(list(maps[:1]), model=model, batch=2, progress=False, **OPTIONS)
    np.testing.assert_allclose(again[0].grid().mean(), together[0].grid().mean(), rtol=1e-6)


@pytest.mark.parametrize("batch", [1, 2])
def test_a_failed_map_is_named(model, maps, batch):
    """One at a time or batched, a map whose posterior fails is named, after the others."""
    posts = [di.posterior(m, model=model, progress=False, **OPTIONS) for m in maps[:2]]
    posts[0].name = "the map with the broken likelihood"

    def broken(theta: torch.Tensor) -> torch.Tensor:
        raise ValueError("no likelihood here")

    posts[0].log_likelihood = broken
    posts[0].locator = None
    with pytest.raises(DiffinferError, match="the map with the broken likelihood failed"):
        compute_grids(posts, batch=batch, progress=False)
    assert posts[1].n_evaluations > 0  # the other map was computed


def test_bad_input_is_refused(model, maps):
    with pytest.raises(InputError, match=r"use diffinfer\.posterior"):
        di.posteriors(maps[0], model=model)
    with pytest.raises(InputError, match="no maps"):
        di.posteriors([], model=model)
    for method in ("grid", "emcee"):  # refused whether or not the grids are batched
        with pytest.raises(InputError, match="batch"):
            di.posteriors(maps, model=model, method=method, batch=0, **OPTIONS)
    with pytest.raises(InputError, match="members"):
        SharedNetwork(model, members=0, chunk=4)


def test_one_map_at_a_time_on_a_cpu(model):
    """On a CPU one map's calls fill the fastest network batch (docs/performance.md)."""
    assert model.device.type == "cpu" and default_batch(model) == 1


def test_a_study_in_batches_matches_one_map_at_a_time(model, tmp_path):
    """A study whose diffusion maps are computed two at a time writes the results of one map
    at a time, and its report gives the cost per map."""
    from diffinfer.calibration.config import StudyConfig
    from diffinfer.calibration.results import load_result, result_path
    from diffinfer.calibration.study import run_study
    from diffinfer.diffusion import save_model

    path = save_model(model, tmp_path / "small")
    cfg = StudyConfig(model=str(path), analyses=["diffusion"], n_maps=3, n_draws=100,
                      options=OPTIONS)  # fmt: skip
    reports = {b: run_study(cfg, tmp_path / f"batch{b}", batch=b, device="cpu", progress=False)
               for b in (1, 2)}  # fmt: skip
    for i in range(3):
        one, two = (
            load_result(result_path(tmp_path / f"batch{b}", "diffusion", i)) for b in (1, 2)
        )
        assert int(one["network_calls"]) == int(two["network_calls"]) > 0
        sd = np.sqrt(np.diag(one["cov"]))
        np.testing.assert_allclose(two["mean"], one["mean"], atol=0.01 * sd.min(), rtol=0)
    cost = reports[2]["analyses"]["diffusion"]["cost"]
    assert cost["network_calls"]["maps"] == 3 and cost["network_calls"]["median"] > 0
    assert cost["seconds"]["max"] > 0
    assert "## Cost per map" in (tmp_path / "batch2" / "report.md").read_text()
