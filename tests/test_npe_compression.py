"""The diffusion likelihood as a compressor for NPE: the compression of a map, the reference
trained on it (card, storage, use through diffinfer.posterior) and its bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import diffinfer as di
from diffinfer.data.synthetic import latin_hypercube
from diffinfer.diffusion.model import DiffusionModel
from diffinfer.errors import DataFileError, InputError, LocateError
from diffinfer.fields import FieldConfig
from diffinfer.likelihoods import compression
from diffinfer.likelihoods.compression import FAILED, N_COMPRESSED, compress
from diffinfer.likelihoods.diffusion import DiffusionLikelihood
from diffinfer.simulators import LognormalSimulator

pytest.importorskip("sbi")

from diffinfer.likelihoods.npe import NPEReference
from diffinfer.likelihoods.npe_summaries import summarise
from diffinfer.likelihoods.npe_training import train_npe

ROOT = Path(__file__).resolve().parents[1]
FIELD = FieldConfig(n_pix=16, box_size=250.0, depth=50.0)


@pytest.fixture(scope="module")
def oracle16() -> DiffusionModel:
    return DiffusionModel.oracle(LognormalSimulator(FIELD))


@pytest.fixture(scope="module")
def maps():
    theta = latin_hypercube(160, FIELD.prior, seed=3)
    return LognormalSimulator(FIELD).simulate(theta, 1, seed=3).reshape(-1, 16, 16), theta


def test_the_compression_is_the_located_maximum_and_its_covariance(oracle16, maps):
    """A map's summary is the likelihood's located maximum and Gauss-Newton covariance in
    the prior box's unit coordinates (the locator run here on its own), with seed 0."""
    density, _ = maps
    got = compress(density[:3], oracle16)
    assert got.shape == (3, N_COMPRESSED) and got.dtype == np.float32
    low, width = np.array(FIELD.prior.low), np.array(FIELD.prior.width)
    for row, rho in zip(got, density[:3], strict=True):
        loc = DiffusionLikelihood(oracle16, rho, terms="vlb", seed=0, progress=False).locate()
        sd = np.sqrt(np.diag(loc.cov))
        corr = loc.cov[0, 1] / (sd[0] * sd[1])
        np.testing.assert_allclose(row[:2], (loc.theta - low) / width, atol=1e-6)
        np.testing.assert_allclose(row[2:4], np.log(sd / width), atol=1e-5)
        np.testing.assert_allclose(row[4], np.arctanh(corr), atol=1e-5)
        assert row[5] == 0.0


def test_a_map_that_cannot_be_located_gets_the_failed_summary(oracle16, maps, monkeypatch):
    def fail(self, *args, **kwargs):
        raise LocateError("no convergence")

    monkeypatch.setattr(DiffusionLikelihood, "locate", fail)
    got = compress(maps[0][:2], oracle16)
    np.testing.assert_array_equal(got, np.repeat(FAILED[None], 2, axis=0))


def _synthetic_compression(theta: np.ndarray, seed: int = 0) -> np.ndarray:
    """A stand-in compression for training (the plumbing, not the information): the truth
    in unit coordinates plus noise of the stated width."""
    rng = np.random.default_rng(seed)
    u = (theta - np.array(FIELD.prior.low)) / np.array(FIELD.prior.width)
    sd = np.full_like(u, 0.05)
    out = np.column_stack([u + sd * rng.normal(size=u.shape), np.log(sd),
                           np.zeros(len(u)), np.zeros(len(u))])  # fmt: skip
    return out.astype(np.float32)


@pytest.fixture(scope="module")
def compressed_reference(oracle16, maps, tmp_path_factory):
    density, theta = maps
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = train_npe(density, theta, FIELD, summary="power+diffusion", max_epochs=30,
                        hidden_features=16, num_transforms=2, seed=0, compressor=oracle16,
                        compressed=_synthetic_compression(theta))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("npe") / "ln16-npe-diffusion"
    ref.save(path)
    return path


def test_a_compressed_reference_records_its_compressor_and_constants(compressed_reference, maps):
    card = json.loads((compressed_reference / "card.json").read_text())
    assert card["summary"] == "power+diffusion"
    assert card["compressor"] == {"model": "oracle", "weights_sha256": None, "terms": "vlb",
                                  "n_timesteps": 16, "seed": 0}  # fmt: skip
    c = _synthetic_compression(maps[1])
    np.testing.assert_allclose(card["compressed_mean"], c.mean(0), rtol=1e-5, atol=1e-6)
    assert card["compressed_std"][5] == 1.0  # a constant column is not divided by zero
    ref = NPEReference.load(compressed_reference)
    x = summarise(maps[0][:2], ref.card, c[:2])
    assert x.shape == (2, len(card["edges"]) - 1 + N_COMPRESSED)


def test_the_posterior_of_a_compressed_reference_compresses_the_map(
    compressed_reference, oracle16, maps, monkeypatch
):
    """likelihood="npe-diffusion" compresses the map with the card's compressor (here the
    16^2 oracle, which the name 'oracle' would load at 64^2) and evaluates the flow; the
    posterior follows the summary's located maximum."""
    monkeypatch.setattr(compression, "compressor_model", lambda entry: oracle16)
    density = maps[0]
    post = di.posterior(density[0], likelihood="npe-diffusion", npe=compressed_reference,
                        progress=False)  # fmt: skip
    g = post.grid()
    assert post.info["provenance"]["settings"]["summary"] == "power+diffusion"
    located = np.array(FIELD.prior.low) + compress(density[:1], oracle16)[0, :2] * 0.4
    assert np.all(np.abs(g.mean() - located) < 3 * np.sqrt(np.diag(g.cov())) + 0.02)


def test_compressed_summaries_bad_inputs(compressed_reference, oracle16, maps):
    density, theta = maps
    with pytest.raises(InputError, match="needs compressor="):
        train_npe(density[:40], theta[:40], FIELD, summary="power+diffusion", max_epochs=1)
    with pytest.raises(InputError, match="belong to the 'power\\+diffusion' summary"):
        train_npe(density[:40], theta[:40], FIELD, summary="power", max_epochs=1,
                  compressor=oracle16)  # fmt: skip
    ref = NPEReference.load(compressed_reference)
    with pytest.raises(InputError, match=r"must have shape \(2, 6\)"):
        summarise(density[:2], ref.card, np.zeros((3, 6)))
    with pytest.raises(InputError, match="NaN or inf"):
        bad = _synthetic_compression(theta[:40])
        bad[0, 0] = np.nan
        train_npe(density[:40], theta[:40], FIELD, summary="power+diffusion", max_epochs=1,
                  compressor=oracle16, compressed=bad)  # fmt: skip
    with pytest.raises(InputError, match="needs an NPE reference on 'power'"):
        di.posterior(density[0], likelihood="npe-power", npe=compressed_reference,
                     progress=False)  # fmt: skip


def test_a_compressor_whose_weights_changed_is_refused(monkeypatch):
    """A reference trained on summaries of a model whose weights differ from the model now
    loaded under that name is refused, naming the fix."""
    model = DiffusionModel.oracle()
    model.card = {**model.card, "weights": {"sha256": "b" * 64}}
    monkeypatch.setitem(compression._MODELS, "oracle", model)
    with pytest.raises(DataFileError, match="retrain the reference"):
        compression.compressor_model({"model": "oracle", "weights_sha256": "a" * 64})


def test_training_data_of_several_sources_is_recognised():
    from diffinfer.calibration.data_checks import is_training_data

    config = {"n_pix": 64}
    data = {"simulator": "nbody", "config": config,
            "sources": [{"root": "data/a", "seed": 0}, {"root": "data/b", "seed": 5}]}  # fmt: skip
    assert is_training_data(data, {"simulator": "nbody", "config": config, "seed": 5}, "data/c")
    assert not is_training_data(data, {"simulator": "nbody", "config": config, "seed": 7},
                                "data/c")  # fmt: skip


def test_the_shipped_compressed_reference_names_the_shipped_compressor():
    """``likelihood="npe-diffusion"`` loads the shipped ensemble; its members were trained on
    summaries of the shipped ``nbody64`` (the same weights' digest), of boxes that model was
    not trained on (the validation and test splits of its data set, and another data set);
    a study of those maps with it is refused, one of the fresh boxes is not."""
    from types import SimpleNamespace

    from diffinfer.calibration.data_checks import check_training_data
    from diffinfer.likelihoods.npe import npe_reference

    ref = npe_reference("npe-diffusion")
    assert ref.summary == "power+diffusion" and ref.n_members == 4
    model = json.loads((ROOT / "models/nbody64/card.json").read_text())
    assert ref.card["compressor"]["model"] == "nbody64"
    assert ref.card["compressor"]["weights_sha256"] == model["weights"]["sha256"]
    sources = {(s["root"], s["split"]) for s in ref.card["data"]["sources"]}
    assert sources == {("data/nbody64", "validation+test"), ("data/nbody64-fresh2", "all")}
    meta = {"simulator": "nbody", "config": ref.card["data"]["config"], "seed": 0}
    for split, refused in (("test", True), ("validation", True), ("train", False)):
        config = SimpleNamespace(model="none", analyses=["npe-diffusion"], options={},
                                 split=split, data="data/nbody64")  # fmt: skip
        if refused:
            with pytest.raises(InputError, match="was trained on the validation\\+test split"):
                check_training_data(config, None, meta)
        else:
            check_training_data(config, None, meta)
    fresh = {**meta, "seed": 20261207}
    config = SimpleNamespace(model="none", analyses=["npe-diffusion"], options={}, split="all",
                             data="data/nbody64-fresh")  # fmt: skip
    check_training_data(config, None, fresh)
