"""Bad input to the Python API: maps, posterior options, model directories and cards.

Each case asserts the exception type and a fragment of its message (the argument, the value
or the fix). Everything here fails before any likelihood is evaluated, so the table is fast.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import diffinfer as di
from diffinfer import plots
from diffinfer.diffusion.checkpoint import load_model
from diffinfer.errors import DataFileError, InputError
from diffinfer.fields.grid import as_density
from diffinfer.io import write_json_atomic
from diffinfer.likelihoods import proposal
from diffinfer.store import CARD_FILE, WEIGHTS_FILE, shipped_models_dir, update_card

ROOT = Path(__file__).resolve().parents[1]
MAP = np.load(ROOT / "examples" / "lognormal64" / "map1.npy")


@pytest.fixture(scope="module")
def network():
    return load_model("lognormal64")


@pytest.fixture(scope="module")
def oracle():
    return load_model("oracle")


def _counts(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(MAP * 0.5)


# ------------------------------------------------------------------ maps (input convention)
MAP_CASES = {
    "density-times-1000": (MAP * 1000, {}, "mean 984"),
    "density-times-1e-300": (MAP * 1e-300, {}, "has mean"),
    "mass-in-msun-per-pixel": (MAP * 3.2e12, {}, "kind='mass'"),
    "constant-map": (np.ones((64, 64)), {}, "no structure"),
    "zero-map": (np.zeros((64, 64)), {}, "values <= 0"),
    "overdensity-as-density": (MAP - 1, {}, "kind='overdensity'"),
    "log10-as-density": (np.log10(MAP), {}, "kind='log10'"),
    "counts-with-empty-pixels": (_counts(), {}, "empty pixels"),
    "counts-as-mass-with-empty-pixels": (_counts(), {"kind": "mass"}, "empty pixels"),
    "density-as-overdensity": (MAP, {"kind": "overdensity"}, "pass kind='density'"),
    "density-as-log10": (MAP, {"kind": "log10"}, "pass kind='density'"),
    "huge-log10": (np.log10(MAP) * 100, {"kind": "log10"}, "not the log10"),
    "negative-mass": (-MAP, {"kind": "mass"}, "values <= 0"),
    "unknown-kind": (MAP, {"kind": "counts"}, "kind must be one of"),
    "nan-pixel": (np.where(np.arange(64 * 64).reshape(64, 64) == 5, np.nan, MAP), {}, "NaN"),
    "inf-pixel": (np.where(np.arange(64 * 64).reshape(64, 64) == 5, np.inf, MAP), {}, "inf"),
    "wrong-resolution": (MAP[::2, ::2], {}, "expects 64 x 64"),
    "larger-map": (np.tile(MAP, (2, 2)), {}, "downsample"),
    "not-square": (MAP[:, :32], {}, "square"),
    "one-dimensional": (MAP.ravel(), {}, "shape (N, N)"),
    "four-dimensional": (MAP[None, None], {}, "shape (N, N)"),
    "stack-of-stacks": (np.stack([MAP, MAP])[None], {}, "shape"),
    "complex-map": (MAP.astype(complex), {}, "real numbers"),
    "strings": (np.full((64, 64), "1.0"), {}, "real numbers"),
    "none": (None, {}, "shape"),
    "boolean-mask": (MAP > 1, {}, "real numbers"),
}


@pytest.mark.parametrize("likelihood", ["exact", "vlb"])
@pytest.mark.parametrize("case", list(MAP_CASES), ids=list(MAP_CASES))
def test_bad_maps_are_refused_with_the_fix(case, likelihood, network):
    field, kwargs, fragment = MAP_CASES[case]
    with pytest.raises(InputError, match=None) as info:
        di.posterior(field, model=network, likelihood=likelihood, **kwargs)
    assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("field", "kind"),
    [(MAP, "density"), (MAP - 1, "overdensity"), (np.log10(MAP), "log10"),
     (MAP * 3.2e12, "mass"), (np.rint(MAP * 1000).astype(np.int64), "mass")],
    ids=["density", "overdensity", "log10", "mass", "integer-mass"],
)  # fmt: skip
def test_every_kind_converts_to_the_same_density(field, kind):
    rho = as_density(field, kind=kind).numpy()
    # mass is divided by its own mean; integer counts are rounded to 1/1000 of the mean
    want = MAP / MAP.mean() if kind in ("mass", "integer-mass") else MAP
    tol = 1e-3 if np.issubdtype(np.asarray(field).dtype, np.integer) else 1e-10
    np.testing.assert_allclose(rho, want, rtol=tol, atol=tol)


# ------------------------------------------------------------------ posterior options
OPTION_CASES = {
    "unknown-method": ({"method": "mcmc"}, "method must be one of"),
    "negative-seed": ({"seed": -1}, "seed must be an integer >= 0"),
    "fractional-seed": ({"seed": 1.5}, "seed must be an integer"),
    "string-seed": ({"seed": "0"}, "seed must be an integer"),
    "unknown-likelihood": ({"likelihood": "elbo"}, "likelihood must be one of"),
    "empty-term-list": ({"likelihood": []}, "non-empty list"),
    "negative-term": ({"likelihood": [-1]}, "likelihood term index"),
    "term-beyond-T": ({"likelihood": [5000]}, "term"),
    "typo-option": ({"n_coarce": 8}, "did you mean 'n_coarse'"),
    "option-of-another-method": ({"n_walkers": 8}, "option of another method"),
    "upsample-0": ({"upsample": 0}, "upsample must be an integer >= 1"),
    "tol-negative": ({"tol": -1}, "tol must be a number in (0, 1)"),
    "tol-2": ({"tol": 2}, "tol must be a number in (0, 1)"),
    "tol-nan": ({"tol": math.nan}, "tol must be"),
    "max-passes-negative": ({"max_passes": -1}, "max_passes must be an integer >= 0"),
    "n-coarse-2": ({"n_coarse": 2}, "n_coarse must be an integer >= 4"),
    "n-fine-float": ({"n_fine": 8.5}, "n_fine must be an integer"),
    "n-aligned-string": ({"n_aligned": "8"}, "n_aligned must be an integer"),
    "radius-1": ({"radius": 1}, "radius must be a number in [2, 10]"),
    "aligned-string": ({"aligned": "yes"}, "aligned must be True or False"),
    "refine-string": ({"refine": "yes"}, "refine must be True or False"),
    "emcee-max-steps-0": ({"method": "emcee", "max_steps": 0}, "max_steps must be"),
    "emcee-one-walker": ({"method": "emcee", "n_walkers": 1}, "n_walkers must be"),
    "emcee-odd-walkers": ({"method": "emcee", "n_walkers": 9}, "n_walkers must be even"),
    "emcee-tau-multiple-0": ({"method": "emcee", "min_tau_multiple": 0}, "min_tau_multiple"),
    "emcee-surrogate-gp": ({"method": "emcee", "surrogate": "gp"}, "surrogate must be"),
    "nuts-zero-chains": ({"method": "nuts", "num_chains": 0}, "num_chains must be"),
    "nuts-negative-warmup": ({"method": "nuts", "warmup_steps": -1}, "warmup_steps must be"),
    "nuts-tree-depth-0": ({"method": "nuts", "max_tree_depth": 0}, "max_tree_depth"),
    "nuts-tree-depth-40": ({"method": "nuts", "max_tree_depth": 40}, "max_tree_depth"),
    "temperature-0": ({"temperature": 0}, "temperature must be a number > 0"),
    "temperature-negative": ({"temperature": -1.0}, "temperature must be"),
    "temperature-inf": ({"temperature": math.inf}, "temperature must be"),
    "precision-fp16": ({"precision": "fp16"}, "precision must be one of"),
    "n-noise-0": ({"n_noise": 0}, "n_noise must be an integer >= 1"),
    "n-timesteps-0": ({"n_timesteps": 0}, "n_timesteps must be an integer >= 1"),
    "t-min-0": ({"t_min": 0}, "t_min must be an integer >= 1"),
    "t-min-beyond-schedule": ({"t_min": 1001}, "t_min must be an integer"),
    "max-batch-0": ({"max_batch": 0}, "max_batch must be an integer >= 1"),
    "noise-sigma-negative": ({"noise_sigma": -1}, "noise_sigma must be a number >= 0"),
    "noise-sigma-nan": ({"noise_sigma": math.nan}, "noise_sigma must be"),
    "box-size-negative": ({"box_size": -1}, "box_size must be a number > 0"),
    "box-size-other": ({"box_size": 250.0}, "trained on 500 Mpc/h"),
    "proposal-unknown": ({"proposal": "flat"}, "proposal must be"),
    "proposal-wrong-length": ({"proposal": np.ones(10)}, "needs 1000"),
    "control-variate-word": ({"control_variate": "yes"}, "control_variate must be"),
    "control-variate-noisy-map": (
        {"control_variate": True, "noise_sigma": 0.1},
        "control_variate=True needs",
    ),
    "exact-with-diffusion-option": (
        {"likelihood": "exact", "n_timesteps": 8},
        "apply to the diffusion likelihood",
    ),
    "exact-noise-sigma-negative": (
        {"likelihood": "exact", "noise_sigma": -1},
        "noise_sigma must be",
    ),
    "model-of-wrong-type": ({"model": 123}, "model must be"),
    "model-missing": ({"model": "no-such-model"}, "not found"),
    "diffusion-without-model": ({"model": None}, "needs a model"),
}


@pytest.mark.parametrize("case", list(OPTION_CASES), ids=list(OPTION_CASES))
def test_bad_posterior_options_are_refused(case, network):
    kwargs, fragment = OPTION_CASES[case]
    kwargs = {"model": network, **kwargs}
    with pytest.raises((InputError, DataFileError)) as info:
        post = di.posterior(MAP, **kwargs)
        post.sample(10)  # options checked when the sampler starts would surface here
    assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize("n", [0, -5, 2.5, "100", None], ids=str)
def test_bad_sample_sizes(n, network):
    post = di.posterior(MAP, model=network, likelihood="exact")
    with pytest.raises(InputError, match="n must be an integer >= 1"):
        post.sample(n)


@pytest.mark.parametrize(
    ("theta", "fragment"),
    [(np.array([0.3]), "shape (2,) or (B, 2)"), (np.array([[0.3, 0.8, 1.0]]), "shape"),
     (np.array([np.nan, 0.8]), "NaN"), ("0.3, 0.8", "numeric"), (np.ones((2, 2, 2)), "shape"),
     (np.array([0.3 + 1j, 0.8]), "real numbers")],
    ids=["one-number", "three-columns", "nan", "string", "three-dimensional", "complex"],
)  # fmt: skip
def test_bad_theta_for_the_likelihood(theta, fragment, oracle):
    like = di.DiffusionLikelihood(oracle, MAP, terms="l0")
    with pytest.raises(InputError) as info:
        like(theta)
    assert fragment in str(info.value)


# ------------------------------------------------------------------ model directories, cards
@pytest.fixture
def model_copy(tmp_path) -> Path:
    dst = tmp_path / "lognormal64"
    shutil.copytree(shipped_models_dir() / "lognormal64", dst)
    return dst


def _edit(card_path: Path, change) -> None:
    card = json.loads(card_path.read_text())
    change(card)
    card_path.write_text(json.dumps(card))


CARD_CASES = {
    "transform-scale": (lambda c: c["transform"].update(scale=1.0), "was edited"),
    "transform-shift": (lambda c: c["transform"].update(shift=0.0), "was edited"),
    "schedule-steps": (lambda c: c["schedule"].update(n_steps=500), "was edited"),
    "box-size": (lambda c: c["field"].update(box_size=250.0), "was edited"),
    "n-pix": (lambda c: c["field"].update(n_pix=128), "was edited"),
    "calibration": (lambda c: c["calibration"][-1].update(temperature=1.0), "was edited"),
    "proposal": (lambda c: c["likelihood"]["timestep_proposal"]["q"].reverse(), "was edited"),
    "weights-outside": (lambda c: c["weights"].update(file="../../README.md"), "file name"),
    "weights-absolute": (lambda c: c["weights"].update(file="/etc/hostname"), "file name"),
    "weights-not-a-string": (lambda c: c["weights"].update(file=3), "file name"),
    "weights-sha": (lambda c: c["weights"].update(sha256="0" * 64), "was edited"),
    "format": (lambda c: c.update(format="other/1"), "not a diffinfer model card"),
    "missing-transform": (lambda c: c.pop("transform"), "lacks ['transform']"),
    "weights-not-mapping": (lambda c: c.update(weights="weights.safetensors"), "mapping"),
}


@pytest.mark.parametrize("case", list(CARD_CASES), ids=list(CARD_CASES))
def test_edited_or_unsafe_cards_are_refused(case, model_copy):
    change, fragment = CARD_CASES[case]
    _edit(model_copy / CARD_FILE, change)
    with pytest.raises(DataFileError) as info:
        load_model(model_copy)
    assert fragment in str(info.value), str(info.value)


def test_descriptive_card_sections_stay_free_to_edit(model_copy):
    _edit(model_copy / CARD_FILE, lambda c: c["metrics"].update(note="checked by hand"))
    _edit(model_copy / CARD_FILE, lambda c: c.update(name="renamed"))
    assert load_model(model_copy).card["name"] == "renamed"


def test_update_card_reseals_the_card(model_copy):
    update_card(model_copy, {"calibration": []})
    assert load_model(model_copy).card["calibration"] == []


FILE_CASES = {
    "card-not-json": (lambda d: (d / CARD_FILE).write_text("{not json"), "not valid JSON"),
    "card-truncated": (
        lambda d: (d / CARD_FILE).write_text((d / CARD_FILE).read_text()[:500]),
        "truncated",
    ),
    "card-a-list": (lambda d: (d / CARD_FILE).write_text("[1, 2]"), "JSON object"),
    "card-missing": (lambda d: (d / CARD_FILE).unlink(), "model card not found"),
    "weights-missing": (lambda d: (d / WEIGHTS_FILE).unlink(), "weights file missing"),
    "weights-corrupted": (
        lambda d: (d / WEIGHTS_FILE).write_bytes((d / WEIGHTS_FILE).read_bytes()[:-10] + b"0" * 10),
        "sha256",
    ),
    "weights-a-directory": (
        lambda d: ((d / WEIGHTS_FILE).unlink(), (d / WEIGHTS_FILE).mkdir()),
        "weights file missing",
    ),
}


@pytest.mark.parametrize("case", list(FILE_CASES), ids=list(FILE_CASES))
def test_broken_model_directories_are_refused(case, model_copy):
    damage, fragment = FILE_CASES[case]
    damage(model_copy)
    with pytest.raises(DataFileError) as info:
        load_model(model_copy)
    assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("name", "error", "fragment"),
    [("", InputError, "model name"), ("   ", InputError, "model name"),
     (123, InputError, "model name"), ("README.md", DataFileError, "not found"),
     ("no/such/dir", DataFileError, "not found")],
    ids=["empty", "blank", "number", "a-file", "missing-path"],
)  # fmt: skip
def test_bad_model_names(name, error, fragment, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(error) as info:
        load_model(name)
    assert fragment in str(info.value)


def test_the_oracle_has_no_card_to_update():
    with pytest.raises(DataFileError, match="oracle has no model card"):
        update_card("oracle", {"calibration": []})


# ------------------------------------------------------------------ files written
def test_json_is_strict_with_nan_as_null(tmp_path):
    path = tmp_path / "report.json"
    write_json_atomic(path, {"a": math.nan, "b": [1.0, math.inf], "c": np.float64(-np.inf),
                             "d": np.array([0.5, np.nan])})  # fmt: skip

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    obj = json.loads(path.read_text(), parse_constant=refuse)
    assert obj == {"a": None, "b": [1.0, None], "c": None, "d": [0.5, None]}
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_failed_writes_leave_no_temporary_files(tmp_path, monkeypatch):
    import diffinfer.io

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(diffinfer.io.os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert not list(tmp_path.iterdir())


def test_save_model_removes_what_a_killed_save_left(model_copy, tmp_path):
    from diffinfer.diffusion.checkpoint import save_model

    dest = tmp_path / "saved"
    stale = [tmp_path / ".saved.999999999.x1y2", tmp_path / ".saved.old-999999999"]
    for d in stale:
        d.mkdir()
    mine = tmp_path / ".saved.notapid"  # not a name save_model writes: left alone
    mine.mkdir()
    save_model(load_model(model_copy), dest)
    assert load_model(dest).card["name"] == "saved"
    assert not any(d.exists() for d in stale) and mine.exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:3", "tpu", "", 7], ids=str)
def test_load_model_on_a_device_this_machine_lacks(device, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="device"):
        load_model("oracle", device=device)


# ------------------------------------------------------------------ the rest of the public API
def _oracle_like(**kwargs):
    return di.DiffusionLikelihood(load_model("oracle"), MAP, **kwargs)


_SIM = di.LognormalSimulator()
_Y = _SIM.transform.forward(MAP)
OTHER_CASES = {
    "prior-box-nan": (lambda: di.PriorBox((np.nan, 0.6), (0.5, 1.0)), "finite number"),
    "prior-box-inf": (lambda: di.PriorBox((0.1, 0.6), (np.inf, 1.0)), "finite number"),
    "prior-box-string": (lambda: di.PriorBox(("a", 0.6), (0.5, 1.0)), "prior box low edge"),
    "prior-box-reversed": (lambda: di.PriorBox((0.5, 0.6), (0.1, 1.0)), "low < high"),
    "prior-box-three-edges": (lambda: di.PriorBox((0.1, 0.6, 0), (0.5, 1.0, 1)), "2 lows"),
    "prior-not-a-box": (lambda: di.Prior("uniform"), "box must be a PriorBox"),
    "prior-not-a-distribution": (lambda: di.Prior(di.PriorBox(), "normal"), "Distribution"),
    "gaussian-negative-std": (lambda: di.Prior.gaussian([0.3, 0.8], [-0.1, 0.1]), "positive"),
    "gaussian-nan-mean": (lambda: di.Prior.gaussian([np.nan, 0.8], [0.1, 0.1]), "finite"),
    "gaussian-three-numbers": (lambda: di.Prior.gaussian([0.3, 0.8, 1], [0.1, 0.1]), "2 numbers"),
    "posterior-prior-string": (
        lambda: di.posterior(MAP, model=None, likelihood="exact", prior="flat"),
        "prior must be a diffinfer.Prior",
    ),
    "simulate-no-maps": (lambda: _SIM.simulate(np.array([0.3, 0.8]), 0), "n must be"),
    "simulate-negative-seed": (lambda: _SIM.simulate(np.array([0.3, 0.8]), 1, seed=-1), "seed"),
    "simulate-outside-prior": (lambda: _SIM.simulate(np.array([0.7, 0.8]), 1), "outside the prior"),
    "exact-nan-map": (lambda: _SIM.exact_log_prob(np.full((64, 64), np.nan), [0.3, 0.8]), "NaN"),
    "exact-outside-raise": (lambda: _SIM.exact_log_prob(_Y, [0.9, 0.8]), "outside the prior"),
    "exact-outside-bogus": (lambda: _SIM.exact_log_prob(_Y, [0.3, 0.8], outside="x"), "outside"),
    "exact-negative-noise": (
        lambda: _SIM.exact_log_prob(_Y, [0.3, 0.8], noise_sigma=-1),
        "noise_sigma must be",
    ),
    "ml-nan-map": (lambda: _SIM.maximum_likelihood(np.full((64, 64), np.nan)), "NaN"),
    "power-negative-box": (lambda: di.power_spectrum(MAP, box_size=-1), "box_size must be"),
    "power-1d": (lambda: di.power_spectrum(MAP.ravel(), box_size=500.0), "shape"),
    "power-nan": (lambda: di.power_spectrum(np.full((64, 64), np.nan), box_size=500.0), "NaN"),
    "samples-bad-shape": (lambda: di.Samples(np.ones(3), "grid"), "shape (chains, draws, 2)"),
    "samples-nan": (lambda: di.Samples(np.full((1, 10, 2), np.nan), "grid"), "finite"),
    "samples-empty": (lambda: di.Samples(np.ones((1, 0, 2)), "grid"), "non-empty"),
    "samples-load-missing": (lambda: di.Samples.load("/nonexistent.npz"), "No such file"),
    "camels-missing-dir": (
        lambda: di.CamelsMaps.open("/nonexistent", suite="Lognormal"),
        "not found",
    ),
    "field-config-string": (lambda: di.FieldConfig(n_pix="64"), "n_pix must be an integer"),
    "field-config-odd": (lambda: di.FieldConfig(n_pix=63), "even"),
    "transform-negative-density": (lambda: _SIM.transform.forward(-MAP), "positive"),
    "likelihood-unknown-terms": (lambda: _oracle_like(terms="foo"), "unknown likelihood terms"),
    "likelihood-term-beyond-T": (lambda: _oracle_like(terms=[5000]), "term"),
    "likelihood-negative-noise": (lambda: _oracle_like(noise_sigma=-1), "noise_sigma must be"),
    "likelihood-bad-space": (lambda: _oracle_like(space="x"), "space must be"),
    "likelihood-negative-seed": (lambda: _oracle_like(seed=-1), "seed must be"),
    "likelihood-precision-fp8": (lambda: _oracle_like(precision="fp8"), "precision"),
    "likelihood-kind": (lambda: _oracle_like(kind="counts"), "kind must be one of"),
    "triangle-nothing": (lambda: plots.triangle([], "/tmp/never.png"), "at least one"),
    "save-the-oracle": (lambda: di.save_model(load_model("oracle"), "/tmp/never"), "oracle"),
    "power-spectrum-file-missing": (
        lambda: di.posterior(MAP, model=None, likelihood="power", spectrum="/nonexistent.st"),
        "No such file",
    ),
    "fit-proposal-one-map": (
        lambda: proposal.fit_timestep_proposal(load_model("oracle"), [MAP]),
        "at least 2 pilot maps",
    ),
}


@pytest.mark.parametrize("case", list(OTHER_CASES), ids=list(OTHER_CASES))
def test_bad_input_to_the_rest_of_the_api(case):
    call, fragment = OTHER_CASES[case]
    with pytest.raises((InputError, DataFileError)) as info:
        call()
    assert fragment in str(info.value), str(info.value)


def test_a_model_of_maps_in_physical_units_checks_its_own_units(network):
    """A model trained on maps in M_sun/h per (Mpc/h)^2 (a CAMELS recipe): its maps pass,
    density contrasts are refused with the fix, and kind='mass' converts them."""
    import copy

    from diffinfer.fields.transform import Transform

    physical = copy.deepcopy(network)
    t = network.transform
    object.__setattr__(physical, "transform", Transform(t.shift + np.log(1e11), t.scale))
    assert physical.data_mean == pytest.approx(1e11 * np.exp(t.shift + t.scale**2 / 2))
    di.posterior(MAP * 1e11, model=physical)
    with pytest.raises(InputError, match=r"this model's maps have mean about 1\.00"):
        di.posterior(MAP, model=physical)
    y_mass = physical.to_model_space(MAP, kind="mass")
    y_contrast = network.to_model_space(MAP / MAP.mean())
    # the model's mean density is the log-normal one of its transform constants
    np.testing.assert_allclose(y_mass.numpy(), y_contrast.numpy(), atol=0.01)


def test_good_inputs_of_other_types_are_accepted(model_copy):
    """Paths, numpy scalars and NaN in descriptive numbers are valid input, not errors."""
    from diffinfer.training.config import DEFAULTS, check_config

    di.posterior(MAP, model=model_copy, likelihood="exact")  # a pathlib.Path model
    update_card(model_copy, {"calibration": [{"temperature": np.float32(1.2),
                                              "report": {"z_std": math.nan}}]})  # fmt: skip
    assert load_model(model_copy).card["calibration"][0]["report"]["z_std"] is None
    config = json.loads(json.dumps(DEFAULTS))
    config["train"]["grad_clip"] = math.inf  # YAML .inf: no clipping
    config["checkpoint"]["every_minutes"] = math.inf
    assert check_config(config)["train"]["grad_clip"] == math.inf
