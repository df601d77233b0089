"""The statistics of the N-body study scripts (calibration/nbody_comparison.py,
scripts/nbody_emulator_validation.py) on cases with known answers."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(relative: str):
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_information_gain_is_the_ratio_of_posterior_areas() -> None:
    comparison = _load("calibration/nbody_comparison.py")
    rng = np.random.default_rng(0)
    results = {"power": [], "diffusion": [], "npe": []}
    factors = rng.uniform(0.5, 0.9, 40)  # the diffusion posterior's widths over power's
    for i, f in enumerate(factors):
        cov = np.diag(rng.uniform(0.01, 0.05, 2) ** 2)
        results["power"].append({"index": i, "cov": cov})
        results["diffusion"].append({"index": i, "cov": cov * f**2})
        if i % 2 == 0:  # finished on half of the maps only
            results["npe"].append({"index": i, "cov": cov * 1.2**2})
    gain = comparison.information_gain(results)
    assert gain["n_common_maps"] == 20  # the maps every analysis finished
    common = factors[::2]
    d = gain["diffusion"]
    # det(f^2 C)^(1/2) / det(C)^(1/2) = f^2 in two dimensions
    assert d["area_ratio_geometric_mean"] == pytest.approx(np.exp(np.mean(np.log(common**2))))
    se = np.std(np.log(common**2), ddof=1) / math.sqrt(20)
    assert d["log_area_ratio_se"] == pytest.approx(se)
    assert d["fraction_tighter"] == 1.0
    for name in ("Omega_m", "sigma_8"):
        assert d["std_ratio"][name]["geometric_mean"] == pytest.approx(
            np.exp(np.mean(np.log(common)))
        )
    assert gain["npe"]["area_ratio_geometric_mean"] == pytest.approx(1.44)
    assert gain["npe"]["fraction_tighter"] == 0.0


def test_one_per_box_keeps_the_first_map_of_each_cosmology() -> None:
    comparison = _load("calibration/nbody_comparison.py")
    thetas = [(0.2, 0.7), (0.3, 0.8), (0.4, 0.9)]
    # maps listed out of order; boxes 0 and 1 have three maps each, box 2 one
    results = [{"index": i, "truth": np.array(thetas[b])}
               for i, b in [(5, 0), (0, 0), (3, 1), (1, 1), (2, 2), (4, 0), (6, 1)]]  # fmt: skip
    kept = comparison.one_per_box(results)
    assert [r["index"] for r in kept] == [0, 1, 2]
    assert [tuple(r["truth"]) for r in kept] == thetas


def test_pooling_refuses_studies_computed_with_other_settings(tmp_path) -> None:
    import json

    comparison = _load("calibration/nbody_comparison.py")
    base = {"model": "none", "analyses": ["npe"], "n_maps": 5, "split": "test",
            "temperature": None, "options": {}}  # fmt: skip
    for name, spec in (("a", base), ("b", {**base, "split": "validation", "n_maps": 3}),
                       ("c", {**base, "model": "nbody64", "temperature": 1.0})):  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "study.json").write_text(json.dumps(spec))
    # another split and number of maps pool (neither study has results: nothing to pool)
    first, pooled = comparison.pooled_results([tmp_path / "a", tmp_path / "b"], box_once=True)
    assert first["split"] == "test" and pooled == {}
    with pytest.raises(SystemExit, match=r"differs .* in model, temperature"):
        comparison.pooled_results([tmp_path / "a", tmp_path / "c"], box_once=False)


def test_pooling_takes_test_sets_simulated_apart_and_refuses_others(tmp_path) -> None:
    """Studies of two data sets pool when the sets come from one simulator and geometry
    with other seeds; other maps, or the same seed (the same boxes twice), are refused."""
    import json

    comparison = _load("calibration/nbody_comparison.py")
    config = {"n_pix": 64, "box_size": 250.0}
    sets = {"fresh": (20261207, config), "fresh2": (20261208, config),
            "again": (20261207, config), "other": (5, {**config, "box_size": 500.0})}  # fmt: skip
    for name, (seed, cfg) in sets.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        meta = {"simulator": "nbody", "field": "Mtot", "suite": "Nbody", "set": "LH",
                "seed": seed, "config": cfg}  # fmt: skip
        (tmp_path / "data" / name / "dataset.json").write_text(json.dumps(meta))
        study = {"model": "none", "analyses": ["npe"], "n_maps": 5, "split": "all",
                 "data": str(tmp_path / "data" / name), "options": {}}  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "study.json").write_text(json.dumps(study))
    first, pooled = comparison.pooled_results([tmp_path / "fresh", tmp_path / "fresh2"],
                                              box_once=True)  # fmt: skip
    assert first["data"].endswith("fresh") and pooled == {}
    with pytest.raises(SystemExit, match=r"seeds .* repeated seed"):
        comparison.pooled_results([tmp_path / "fresh", tmp_path / "again"], box_once=True)
    with pytest.raises(SystemExit, match=r"config differ"):
        comparison.pooled_results([tmp_path / "fresh", tmp_path / "other"], box_once=True)


def test_emulator_validation_errors_count_boxes_not_maps() -> None:
    emulator = _load("scripts/nbody_emulator_validation.py")
    rng = np.random.default_rng(1)
    # 400 boxes of 15 maps sharing a box offset: the mean's error is set by the boxes
    box = rng.normal(size=(400, 1, 1)) * 2.0
    x = (box + rng.normal(size=(400, 15, 1)) * 0.5).reshape(-1, 1)
    mean, se = emulator.mean_se(x, per_box=15)
    assert mean[0] == pytest.approx(x.mean())
    truth = math.sqrt(2.0**2 + 0.5**2 / 15) / math.sqrt(400)
    assert se[0] == pytest.approx(truth, rel=0.1)
    naive = emulator.mean_se(x)[1][0]  # independent maps would claim ~3.8x less
    assert naive < truth / 3
    r, r_se = emulator.ratio_with_error((np.array([2.0]), np.array([0.1])),
                                        (np.array([4.0]), np.array([0.2])))  # fmt: skip
    assert r[0] == 0.5 and r_se[0] == pytest.approx(0.5 * math.hypot(0.05, 0.05))
    a = (np.array([1.0, 2.0]), np.array([0.3, 0.4]))
    b = (np.array([1.5, 2.0]), np.array([0.4, 0.3]))
    assert emulator.chi2(a, b) == pytest.approx(0.5)  # (0.5^2 / 0.5^2 + 0) / 2


def test_the_independent_checks_pass_a_calibrated_toy_and_fail_an_overconfident_one() -> None:
    """sbi's check_sbc and the tarp package on Gaussian posteriors with known calibration:
    300 maps, truths drawn from each map's posterior (calibrated) or from one twice as wide
    (draws too narrow by 2)."""
    pytest.importorskip("sbi")
    pytest.importorskip("tarp")
    from diffinfer.parameters import PriorBox

    comparison = _load("calibration/nbody_comparison.py")
    box = PriorBox(low=(-10.0, -10.0), high=(10.0, 10.0))
    rng = np.random.default_rng(4)
    mean = rng.uniform(-3, 3, (300, 2))
    draws = mean[:, None, :] + rng.normal(size=(300, 500, 2))

    def checks(spread: float) -> dict:
        truth = mean + spread * rng.normal(size=(300, 2))
        return comparison.independent_checks(
            [{"draws": d, "truth": t} for d, t in zip(draws, truth, strict=True)], box, seed=1
        )

    good, bad = checks(1.0), checks(2.0)
    assert good["n_maps"] == good["n_boxes"] == 300 and good["n_draws"] == 500
    assert min(good["sbc_ks_pvalue"].values()) > 0.001
    assert max(bad["sbc_ks_pvalue"].values()) < 1e-6
    assert max(bad["sbc_c2st_ranks"].values()) > max(good["sbc_c2st_ranks"].values())
    # the calibrated toy's C2ST is that of exactly uniform ranks, which is not 0.5
    for name, value in good["sbc_c2st_ranks"].items():
        assert abs(value - good["sbc_c2st_uniform_ranks"][name]) < 0.07
    assert min(bad["sbc_c2st_ranks"].values()) > max(bad["sbc_c2st_uniform_ranks"].values())
    assert good["tarp_max_deviation"] < 0.1 < bad["tarp_max_deviation"]
    assert bad["tarp_atc"] < good["tarp_atc"]  # too narrow: ecp below the diagonal


def test_emulator_targets_follow_the_response_to_theta() -> None:
    """The emulator targets on synthetic spectra: an emulator whose P(k) is the simulations'
    within 1 % passes; one whose response to theta is half the simulations' fails the
    response and the corners' P(k), not the centre's."""
    emulator = _load("scripts/nbody_emulator_validation.py")
    k = np.linspace(0.05, 1.5, 20)

    def power(theta, response=1.0):
        om, s8 = theta
        slope = response * (np.log(om / 0.3) * 1.5 + np.log(s8 / 0.8) * 2.0)
        return 1e3 * k**-1.5 * np.exp(slope)

    def report(response):
        cos = []
        for theta in [(0.3, 0.8), (0.15, 0.95), (0.45, 0.65), (0.15, 0.65), (0.45, 0.95)]:
            s, e = power(theta), power(theta, response) * 1.01
            cos.append({"theta": list(theta), "k": k.tolist(), "power_ratio": (e / s).tolist(),
                        "power_ratio_se": (0.014 * e / s).tolist(),
                        "power_emulated": e.tolist(), "power_emulated_se": (0.01 * e).tolist(),
                        "power_simulated": s.tolist(), "power_simulated_se": (0.01 * s).tolist(),
                        "lnrho_moments_emulated": [0.01, 1.0, 0.0],
                        "lnrho_moments_simulated": [0.0, 1.0, 0.0],
                        "lnrho_moments_se": [0.01, 0.01, 0.01]})  # fmt: skip
        return {"cosmologies": cos}

    good = emulator.emulator_targets(report(1.0))
    assert good["all_ok"]
    assert all(r["ratio_mean"] == pytest.approx(1.0) for r in good["responses"])
    weak = emulator.emulator_targets(report(0.5))
    assert not weak["all_ok"]
    assert all(r["ratio_mean"] == pytest.approx(0.5) and r["status"] == "not met"
               for r in weak["responses"])  # fmt: skip
    power_ok = {tuple(c["theta"]): c["power_ok"] for c in weak["cosmologies"]}
    assert power_ok[(0.3, 0.8)] and not power_ok[(0.15, 0.65)]
    with pytest.raises(SystemExit, match="four corners"):
        emulator.emulator_targets({"cosmologies": report(1.0)["cosmologies"][:3]})


def test_compressed_maps_keep_the_first_maps_of_each_box_and_refuse_none() -> None:
    refs = _load("scripts/train_references.py")
    boxes = np.array([3, 5, 7, 3, 5, 7, 3, 5, 7])  # breadth first, as compress_maps writes
    assert refs.first_maps_per_box(boxes, 2).tolist() == [True] * 6 + [False] * 3
    assert refs.first_maps_per_box(boxes, 1).sum() == 3
    with pytest.raises(SystemExit, match="--maps-per-box must be at least 1"):
        refs.compressed_maps([], maps_per_box=0)
