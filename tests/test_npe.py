"""Neural posterior estimation references (sbi): training, storage without pickles, and use
through diffinfer.posterior."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import diffinfer as di
from diffinfer.data.synthetic import latin_hypercube
from diffinfer.errors import DataFileError, InputError
from diffinfer.fields import FieldConfig
from diffinfer.simulators import LognormalSimulator

pytest.importorskip("sbi")

from diffinfer.likelihoods.npe import NPEReference
from diffinfer.likelihoods.npe_summaries import MapEmbedding
from diffinfer.likelihoods.npe_training import train_npe

FIELD = FieldConfig(n_pix=16, box_size=250.0, depth=50.0)


@pytest.fixture(scope="module")
def training_set():
    sim = LognormalSimulator(FIELD)
    theta = latin_hypercube(600, FIELD.prior, seed=11)
    maps = sim.simulate(theta, 2, seed=11).reshape(-1, 16, 16)
    return maps, np.repeat(theta, 2, axis=0)


@pytest.fixture(scope="module")
def power_reference(training_set, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small flow: one thread is faster, and the result is fixed
    try:
        maps, theta = training_set
        ref = train_npe(maps, theta, FIELD, summary="power", max_epochs=60, hidden_features=32,
                        num_transforms=3, seed=0)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("npe") / "ln16-npe-power"
    ref.save(path)
    return path


def test_a_saved_reference_loads_to_the_same_density(power_reference, training_set) -> None:
    maps, _ = training_set
    ref = NPEReference.load(power_reference)
    assert ref.card["format"] == "diffinfer-npe-1"
    assert (power_reference / "weights.safetensors").is_file()
    assert not list(power_reference.glob("*.p*kl*")) and not list(power_reference.glob("*.pt"))
    again = NPEReference.load(power_reference)
    x = ref.summarise(maps[0])
    theta = torch.tensor([[0.3, 0.8], [0.2, 0.9], [0.45, 0.65]])
    torch.testing.assert_close(ref.log_prob(theta, x), again.log_prob(theta, x))
    assert torch.isinf(ref.log_prob(torch.tensor([[0.05, 0.8]]), x)).all()


def test_the_estimator_learns_the_parameters(power_reference) -> None:
    """Held-out maps: the NPE posterior means track the truth (a trained estimator, not
    noise) and its 68 % intervals hold the truth about as often as they should."""
    ref = NPEReference.load(power_reference)
    sim = LognormalSimulator(FIELD)
    theta = latin_hypercube(40, FIELD.prior, seed=99)
    maps = sim.simulate(theta, 1, seed=99).reshape(-1, 16, 16)
    means, inside = [], []
    for m, t in zip(maps, theta, strict=True):
        draws = ref.sample(400, ref.summarise(m), seed=1)
        means.append(draws.mean(0))
        lo, hi = np.quantile(draws, [0.16, 0.84], axis=0)
        inside.append((lo <= t) & (t <= hi))
    means = np.array(means)
    # sigma_8 and Omega_m are degenerate on 16^2 maps; S_8-like combination is well measured
    s8_true = theta[:, 1] * np.sqrt(theta[:, 0] / 0.3)
    s8_mean = means[:, 1] * np.sqrt(means[:, 0] / 0.3)
    assert np.corrcoef(s8_true, s8_mean)[0, 1] > 0.8
    coverage = np.mean(inside)
    assert 0.45 < coverage < 0.9  # 68 % nominal, 80 draws: a broken scale fails


def test_posterior_takes_the_npe_reference_as_a_likelihood(power_reference, training_set) -> None:
    maps, _ = training_set
    post = di.posterior(maps[0], model=None, likelihood="npe-power", npe=str(power_reference),
                        progress=False)  # fmt: skip
    samples = post.sample(500)
    assert "neural posterior estimate" in post.info["likelihood"]
    assert np.all(samples.theta.reshape(-1, 2) >= np.array(FIELD.prior.low))
    ref = NPEReference.load(power_reference)
    direct = ref.sample(4000, ref.summarise(maps[0]), seed=2)
    # the grid over q(theta | x) and sbi's own sampler agree on the mean
    np.testing.assert_allclose(samples.theta.reshape(-1, 2).mean(0), direct.mean(0),
                               atol=0.25 * direct.std(0).max())  # fmt: skip


def test_npe_inputs_are_refused_with_the_fix(power_reference, training_set) -> None:
    maps, _ = training_set
    with pytest.raises(InputError, match="needs an NPE reference on 'power\\+cnn'"):
        di.posterior(maps[0], model=None, likelihood="npe", npe=str(power_reference),
                     progress=False)  # fmt: skip
    with pytest.raises(InputError, match="option npe names a neural posterior estimator"):
        di.posterior(maps[0], likelihood="exact", npe=str(power_reference), progress=False)
    with pytest.raises(InputError, match="16"):
        di.posterior(np.ones((32, 32)), model=None, likelihood="npe-power",
                     npe=str(power_reference), progress=False)  # fmt: skip
    with pytest.raises(InputError, match="summary"):
        train_npe(maps[:10], np.full((10, 2), [0.3, 0.8]), FIELD, summary="bispectrum")


def test_a_damaged_reference_is_refused(power_reference, tmp_path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(power_reference, bad)
    weights = bad / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DataFileError, match="sha256"):
        NPEReference.load(bad)
    other = tmp_path / "other"
    shutil.copytree(power_reference, other)
    card = json.loads((other / "card.json").read_text())
    card["format"] = "diffinfer-model-1"
    (other / "card.json").write_text(json.dumps(card))
    with pytest.raises(DataFileError, match="not an NPE reference card"):
        NPEReference.load(other)
    with pytest.raises(DataFileError, match="not found"):
        NPEReference.load(tmp_path / "missing")


def test_the_power_reference_of_an_nbody_model_needs_its_own_spectrum() -> None:
    """The default power-spectrum likelihood is fitted to log-normal maps: a model of other
    maps must be given the one fitted to its data."""
    import copy

    from diffinfer.diffusion import load_model

    model = load_model("lognormal64")
    model.card = copy.deepcopy(model.card)
    model.card["data"]["simulator"] = "nbody"
    model.card["name"] = "nbody-like"
    rho = LognormalSimulator().simulate([0.3, 0.8], 1, seed=0)[0]
    with pytest.raises(InputError, match=r"nbody-like-power\.npz"):
        di.posterior(rho, model=model, likelihood="power", progress=False)


def test_a_study_without_a_model_is_for_references_on_a_data_set() -> None:
    from diffinfer.calibration.config import StudyConfig

    with pytest.raises(InputError, match="model 'none' is for studies of the references"):
        StudyConfig(model="none", analyses=["diffusion", "npe"], data="data/x")
    with pytest.raises(InputError, match="model 'none' is for studies of the references"):
        StudyConfig(model="none", analyses=["npe"])
    with pytest.raises(InputError, match="noise_sigma is added in a model's space"):
        StudyConfig(model="none", analyses=["npe"], data="data/x", noise_sigma=0.1)


def test_the_map_embedding_passes_the_spectrum_and_respects_the_pooling_grid() -> None:
    torch.manual_seed(0)
    emb = MapEmbedding(n_bins=5, n_pix=16, channels=(4, 8, 8), n_features=6).double()

    def embed(maps):
        return emb(torch.cat([power, maps.reshape(len(maps), -1)], dim=1))

    power = torch.randn(3, 5, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(16, 16, generator=gen, dtype=torch.float64)
    maps = torch.stack([noise, 3 * noise, 10 * noise])  # one pattern at three amplitudes
    out = embed(maps)
    assert out.shape == (3, 5 + 6)
    torch.testing.assert_close(out[:, :5], power, rtol=0, atol=0)
    assert (out[1:, 5:] - out[0, 5:]).abs().amax(1).min() > 1e-5  # the map matters
    # periodic shifts by the pooling stride 2^3 leave the CNN features unchanged ...
    out8 = embed(torch.roll(maps, shifts=(8, -8), dims=(-2, -1)))
    torch.testing.assert_close(out8, out, rtol=1e-10, atol=1e-12)
    # ... a one-pixel shift moves the spike to another place in the pooling grid
    out1 = embed(torch.roll(maps, shifts=1, dims=-1))
    assert (out1[:, 5:] - out[:, 5:]).abs().amax(1).min() > 1e-8  # (exact invariance: ~1e-17)


def test_the_power_and_cnn_reference_trains_saves_and_loads(training_set, tmp_path) -> None:
    maps, theta = training_set
    ref = train_npe(maps[:400], theta[:400], FIELD, summary="power+cnn", max_epochs=2,
                    stop_after_epochs=2, hidden_features=16, num_transforms=2,
                    channels=(4, 8), n_features=4, seed=0)  # fmt: skip
    assert ref.card["summary"] == "power+cnn"
    assert ref.card["training"]["epochs"] == 2  # max_epochs bounds the epochs run
    ref.save(tmp_path / "cnn")
    loaded = NPEReference.load(tmp_path / "cnn")
    assert loaded.card["architecture"]["channels"] == [4, 8]
    x = loaded.summarise(maps[0])
    assert x.shape == (1, len(loaded.card["edges"]) - 1 + 16 * 16)
    torch.testing.assert_close(loaded.log_prob(theta[:3], x), ref.log_prob(theta[:3], x))
    draws = loaded.sample(200, x, seed=0)
    assert draws.shape == (200, 2)
    assert np.all((draws >= FIELD.prior.low) & (draws <= FIELD.prior.high))
    # the map is embedded once per call; sbi's own log_prob embeds it for every θ
    inside = theta[:50]
    with torch.no_grad():
        sbi_lp = loaded.estimator.log_prob(torch.as_tensor(inside, dtype=torch.float32)
                                           .unsqueeze(1), condition=x.float())  # fmt: skip
    torch.testing.assert_close(loaded.log_prob(inside, x), sbi_lp.reshape(-1).double(),
                               atol=1e-4, rtol=1e-5)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "likelihood"), [("nbody64-npe", "npe"), ("nbody64-npe-power", "npe-power")]
)
def test_the_shipped_nbody_references_recover_held_out_parameters(name, likelihood) -> None:
    """The shipped NPE references, loaded by name, on the three held-out N-body example maps
    (test split): the truth lies within 3.5 posterior standard deviations of the mean."""
    import json as _json
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples" / "nbody64"
    info = _json.loads((examples / "examples.json").read_text())
    ref = NPEReference.load(name)
    assert ref.card["name"] == name
    stds = []
    for file, entry in info.items():
        rho = np.load(examples / file)
        truth = np.array([entry["theta"]["Omega_m"], entry["theta"]["sigma_8"]])
        post = di.posterior(rho, model="nbody64", likelihood=likelihood, npe=name, progress=False)
        grid = post.grid()
        mean, std = grid.mean(), np.sqrt(np.diag(grid.cov()))
        assert np.all(np.abs(mean - truth) < 3.5 * std), (file, mean, std, truth)
        stds.append(std)
    # informative: the uniform prior's standard deviation is 0.4 / sqrt(12) = 0.115
    assert np.mean(stds) < 0.09


def test_the_npe_grid_resolves_a_posterior_piled_against_the_prior_edge() -> None:
    """examples/nbody64/map0.npy (Omega_m = 0.110, at the prior's edge): the NPE posterior on
    its default grid agrees with one on a grid twice as fine per axis; the former default grid
    (8^2 + 12^2) was 1 sd off in Omega_m and 2.4 times too wide."""
    from pathlib import Path

    from diffinfer.calibration.compare import two_sample_accuracy

    rho = np.load(Path(__file__).resolve().parents[1] / "examples" / "nbody64" / "map0.npy")
    default = di.posterior(rho, model="nbody64", likelihood="npe", progress=False).grid()
    dense = di.posterior(rho, model="nbody64", likelihood="npe", progress=False,
                         n_coarse=32, n_fine=48).grid()  # fmt: skip
    sd = np.sqrt(np.diag(dense.cov()))
    assert np.all(np.abs(default.mean() - dense.mean()) < 0.1 * sd)
    np.testing.assert_allclose(np.sqrt(np.diag(default.cov())), sd, rtol=0.05)
    assert two_sample_accuracy(default.sample(4000, seed=1), dense.sample(4000, seed=2)) < 0.53


@pytest.fixture(scope="module")
def second_member(training_set):
    """A flow with the power reference's settings and another seed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        maps, theta = training_set
        return train_npe(maps, theta, FIELD, summary="power", max_epochs=60,
                         hidden_features=32, num_transforms=3, seed=1)  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def test_training_holds_out_whole_cosmologies(power_reference) -> None:
    """Maps of one cosmology (slabs of one box) are never split between training and
    early stopping: 10 % of the 600 cosmologies are held out, with both their maps."""
    card = NPEReference.load(power_reference).card["training"]
    assert card["n_cosmologies"] == 600
    assert card["validation"] == {"fraction": 0.1, "by": "cosmology", "n_cosmologies": 60}
    assert 1 <= card["best_epoch"] <= card["epochs"] <= 60


def test_an_ensemble_is_the_mixture_of_its_members(power_reference, second_member,
                                                   training_set, tmp_path) -> None:  # fmt: skip
    from diffinfer.likelihoods.npe import NPEEnsemble

    maps, _ = training_set
    first = NPEReference.load(power_reference)
    ens = NPEEnsemble.from_members([first, second_member], "ln16-ensemble")
    path = ens.save(tmp_path / "ln16-ensemble")
    loaded = NPEReference.load(path)  # one entry point for single flows and ensembles
    assert isinstance(loaded, NPEEnsemble) and loaded.n_members == 2
    x = loaded.summarise(maps[3])
    theta = torch.tensor([[0.3, 0.8], [0.2, 0.9], [0.45, 0.65], [0.05, 0.8]])
    a, b = first.log_prob(theta, x), second_member.log_prob(theta, x)
    expected = torch.log(0.5 * torch.exp(a[:3]) + 0.5 * torch.exp(b[:3]))
    torch.testing.assert_close(loaded.log_prob(theta, x)[:3], expected)
    assert torch.isinf(loaded.log_prob(theta, x)[3])
    draws = loaded.sample(4000, x, seed=3)
    assert draws.shape == (4000, 2)
    assert np.all((draws >= FIELD.prior.low) & (draws <= FIELD.prior.high))
    # the mixture's mean is the members' average mean (4000 draws: within 4 s.e.)
    means = np.mean([first.sample(8000, x, seed=5).mean(0),
                     second_member.sample(8000, x, seed=6).mean(0)], axis=0)  # fmt: skip
    se = draws.std(0) / np.sqrt(4000) + draws.std(0) / np.sqrt(16000)
    assert np.all(np.abs(draws.mean(0) - means) < 4 * se)
    post = di.posterior(maps[3], model=None, likelihood="npe-power", npe=str(path),
                        progress=False)  # fmt: skip
    assert "ln16-ensemble" in post.info["likelihood"]
    # a study's coverage goes into the card; the members' digests still hold
    from diffinfer.likelihoods.npe import record_coverage

    record_coverage(path, {"n_maps": 400, "verdict": "calibrated"})
    assert NPEReference.load(path).card["coverage"]["verdict"] == "calibrated"
    with pytest.raises(DataFileError, match="not an NPE reference card"):
        record_coverage("lognormal64", {"n_maps": 1})


def test_an_ensemble_of_disagreeing_members_is_refused(power_reference, second_member,
                                                       training_set, tmp_path) -> None:  # fmt: skip
    import shutil

    from diffinfer.likelihoods.npe import NPEEnsemble

    maps, theta = training_set
    first = NPEReference.load(power_reference)
    with pytest.raises(InputError, match=r"seeds .* repeat"):
        NPEEnsemble.from_members([first, NPEReference.load(power_reference)], "dup")
    other = train_npe(maps[:200], theta[:200], FIELD, summary="power", max_epochs=1,
                      hidden_features=16, num_transforms=3, seed=2)  # fmt: skip
    with pytest.raises(InputError, match=r"member 1 differs from member 0 in .*architecture"):
        NPEEnsemble.from_members([first, other], "mixed")
    with pytest.raises(InputError, match="at least 2 members"):
        NPEEnsemble.from_members([first], "one")
    path = NPEEnsemble.from_members([first, second_member], "ens").save(tmp_path / "ens")
    # a member edited on disk to another learning rate: refused at load time, named
    card = json.loads((path / "member-1" / "card.json").read_text())
    card["training"]["learning_rate"] = 1e-3
    (path / "member-1" / "card.json").write_text(json.dumps(card))
    with pytest.raises(DataFileError, match=r"training\.learning_rate"):
        NPEReference.load(path)
    # a member swapped for another flow: its weights are not the ones the card lists
    shutil.rmtree(path / "member-1")
    other.save(path / "member-1")
    with pytest.raises(DataFileError, match="not the member that"):
        NPEReference.load(path)
    shutil.rmtree(path / "member-1")
    with pytest.raises(DataFileError, match="member-1"):
        NPEReference.load(path)


def test_a_study_reads_every_map_of_a_test_set_simulated_apart(
    power_reference, second_member, tmp_path, monkeypatch
) -> None:
    """split='all' reads one map of each cosmology of a separately simulated data set;
    it is refused for the data a reference was trained on, and a reference trained on
    other maps (another geometry) is refused, naming the difference. A study is not grown
    with a reference whose weights changed under the same name."""
    import shutil

    import diffinfer.likelihoods.npe as npe_module
    from diffinfer.calibration.config import StudyConfig
    from diffinfer.calibration.results import load_results
    from diffinfer.calibration.study import run_study
    from diffinfer.data import write_synthetic_dataset
    from diffinfer.data.camels import CamelsMaps

    fresh = tmp_path / "fresh"
    write_synthetic_dataset(fresh, n_cosmologies=5, maps_per_cosmology=2, config=FIELD, seed=5,
                            progress=False)  # fmt: skip
    meta = json.loads((fresh / "dataset.json").read_text())

    def reference(name: str, source=power_reference, **data) -> str:
        path = tmp_path / name
        shutil.copytree(source, path)
        card = json.loads((path / "card.json").read_text())
        card["data"] = {"simulator": "lognormal", "config": meta["config"], "seed": 11, **data}
        (path / "card.json").write_text(json.dumps(card))  # the weights' sha256 still holds
        return str(path)

    def study(npe: str, out: str, n_maps: int = 5) -> dict:
        config = StudyConfig(model="none", analyses=["npe-power"], data=str(fresh),
                             split="all", n_maps=n_maps, n_draws=50,
                             options={"npe": npe})  # fmt: skip
        return run_study(config, tmp_path / out, progress=False)

    study(reference("apart"), "ok")
    truths = np.array([r["truth"] for r in load_results(tmp_path / "ok", "npe-power")])
    maps = CamelsMaps.open(fresh, suite="Lognormal", maps_per_cosmology=2)
    np.testing.assert_allclose(truths, maps.theta(np.arange(0, 10, 2)))  # one per cosmology
    with pytest.raises(InputError, match="trained on that data set"):
        study(reference("same", seed=5), "same")
    with pytest.raises(InputError, match=r"box_size 500\.0 against 250\.0"):
        study(reference("other", config={**meta["config"], "box_size": 500.0}), "other")
    assert not (tmp_path / "same").joinpath("study.json").exists()
    second_member.save(tmp_path / "second")
    shutil.rmtree(tmp_path / "apart")
    reference("apart", source=tmp_path / "second")  # same name and path, other weights
    monkeypatch.setattr(npe_module, "_NPE_CACHE", {})  # as a new process would load it
    with pytest.raises(InputError, match=r"computed with the reference .*weights sha256"):
        study(str(tmp_path / "apart"), "ok", n_maps=6)


def _set_state_seconds(path, seconds: float) -> None:
    """Rewrite the training time a state records (its JSON header)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["seconds"] = seconds
    save_file(tensors, path, metadata={"state": json.dumps(meta)})


def test_an_interrupted_training_resumes_where_it_stopped(training_set, tmp_path) -> None:
    """Three epochs, then three more from the checkpoint, give the six-epoch run (same
    validation losses and weights); a checkpoint of other settings or a damaged one is
    refused, naming the fix."""
    maps, theta = training_set
    kwargs = dict(summary="power", hidden_features=16, num_transforms=2, seed=3,
                  stop_after_epochs=50)  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = train_npe(maps, theta, FIELD, max_epochs=6, **kwargs)
        state = tmp_path / "state.safetensors"
        lines: list[str] = []
        first = train_npe(maps, theta, FIELD, max_epochs=3, checkpoint=state, **kwargs)
        assert first.card["training"]["epochs"] == 3 and state.is_file()
        _set_state_seconds(state, 1000.0)  # as if the first run had taken 1,000 s
        resumed = train_npe(maps, theta, FIELD, max_epochs=6, checkpoint=state, log=lines.append,
                            **kwargs)  # fmt: skip
        assert lines[0].startswith("resumed from") and "after epoch 3" in lines[0]
        assert len(lines) == 4  # the resume and epochs 4-6
        for key in ("epochs", "best_epoch"):
            assert resumed.card["training"][key] == straight.card["training"][key]
        # the training time adds up over the runs
        assert 1000.0 < resumed.card["training"]["seconds"] < 1000.0 + 600
        np.testing.assert_allclose(resumed.card["training"]["best_validation_loss"],
                                   straight.card["training"]["best_validation_loss"],
                                   rtol=1e-6)  # fmt: skip
        x = straight.summarise(maps[0])
        torch.testing.assert_close(resumed.log_prob(theta[:4], x),
                                   straight.log_prob(theta[:4], x), rtol=1e-5,
                                   atol=1e-5)  # fmt: skip
        with pytest.raises(InputError, match="learning_rate"):
            train_npe(maps, theta, FIELD, max_epochs=6, checkpoint=state, learning_rate=1e-3,
                      **kwargs)  # fmt: skip
        state.write_bytes(b"not a state")
        with pytest.raises(DataFileError, match="delete it to start again"):
            train_npe(maps, theta, FIELD, max_epochs=6, checkpoint=state, **kwargs)
    finally:
        torch.set_num_threads(threads)
