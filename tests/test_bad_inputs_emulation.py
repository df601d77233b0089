"""Bad input to emulation: ``DiffusionModel.sample`` and ``diffinfer emulate``.

The API raises :class:`~diffinfer.errors.InputError` naming the argument before any work;
the command line prints one line ``diffinfer: error: ...``, returns 2, shows no traceback,
checks every input (``--out`` included) before sampling and leaves no output directory
behind. Nothing here samples more than one map with two steps.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from diffinfer.cli import main
from diffinfer.diffusion import load_model
from diffinfer.errors import DataFileError, InputError, OutsidePriorError
from diffinfer.store import resolve_model_dir
from tests.cli_helpers import fill, run_bad

THETA = np.array([0.3, 0.8])


@pytest.fixture(scope="module")
def oracle():
    return load_model("oracle")


# ------------------------------------------------------------------------------- the API
# (keyword arguments of sample, error class, fragment of the message)
API_CASES = {
    "theta-three-numbers": ({"theta": np.array([0.3, 0.8, 0.1])}, InputError, "shape"),
    "theta-wrong-columns": ({"theta": np.ones((2, 3))}, InputError, "shape"),
    "theta-3d": ({"theta": np.full((1, 1, 2), 0.3)}, InputError, "shape"),
    "theta-nan": ({"theta": np.array([np.nan, 0.8])}, InputError, "NaN or inf"),
    "theta-inf": ({"theta": np.array([0.3, np.inf])}, InputError, "NaN or inf"),
    "theta-strings": ({"theta": ["a", "b"]}, InputError, "numeric"),
    "theta-none": ({"theta": None}, InputError, "theta"),
    "theta-complex": ({"theta": np.array([0.3 + 1j, 0.8])}, InputError, "complex"),
    "theta-empty": ({"theta": np.zeros((0, 2))}, InputError, "no parameter vectors"),
    "omega-m-outside": ({"theta": np.array([0.9, 0.8])}, OutsidePriorError, "outside the prior"),
    "sigma-8-outside": ({"theta": np.array([0.3, 0.3])}, OutsidePriorError, "outside the prior"),
    "one-row-outside": (
        {"theta": np.array([[0.3, 0.8], [0.3, 1.2]])},
        OutsidePriorError,
        "outside the prior",
    ),
    "n-zero": ({"n": 0}, InputError, "n must be an integer >= 1"),
    "n-negative": ({"n": -3}, InputError, "n must be"),
    "n-fraction": ({"n": 1.5}, InputError, "n must be"),
    "n-string": ({"n": "2"}, InputError, "n must be"),
    "n-bool": ({"n": True}, InputError, "n must be"),
    "n-nan": ({"n": float("nan")}, InputError, "n must be"),
    "steps-zero": ({"steps": 0}, InputError, "steps must be an integer in [1, 1000]"),
    "steps-negative": ({"steps": -5}, InputError, "steps must be"),
    "steps-above-T": ({"steps": 5000}, InputError, "steps must be an integer in [1, 1000]"),
    "steps-fraction": ({"steps": 2.5}, InputError, "steps must be"),
    "steps-string": ({"steps": "5"}, InputError, "steps must be"),
    "sampler-unknown": ({"sampler": "euler"}, InputError, "sampler must be one of"),
    "sampler-upper-case": ({"sampler": "DDIM"}, InputError, "sampler must be one of"),
    "sampler-none": ({"sampler": None}, InputError, "sampler must be one of"),
    "eta-negative": ({"eta": -0.1}, InputError, "eta must be"),
    "eta-above-one": ({"eta": 1.5}, InputError, "eta must be"),
    "eta-nan": ({"eta": float("nan")}, InputError, "eta must be"),
    "eta-deterministic-sampler": ({"sampler": "unipc", "eta": 0.5}, InputError, "leave eta out"),
    "spacing-unknown": ({"spacing": "cosine"}, InputError, "spacing must be one of"),
    "spacing-number": ({"spacing": 7}, InputError, "spacing must be one of"),
    "batch-size-minus-one": ({"batch_size": -1}, InputError, "batch_size must be"),
    "batch-size-zero": ({"batch_size": 0}, InputError, "batch_size must be"),
    "batch-size-fraction": ({"batch_size": 2.5}, InputError, "batch_size must be"),
    "seed-negative": ({"seed": -1}, InputError, "seed must be an integer >= 0"),
    "seed-fraction": ({"seed": 1.5}, InputError, "seed must be"),
    "seed-string": ({"seed": "0"}, InputError, "seed must be"),
    "precision-fp16": ({"precision": "fp16"}, InputError, "precision must be one of"),
    "precision-auto": ({"precision": "auto"}, InputError, "precision must be one of"),
    "progress-string": ({"progress": "yes"}, InputError, "progress must be True or False"),
    "progress-int": ({"progress": 1}, InputError, "progress must be True or False"),
    "density-none": ({"density": None}, InputError, "density must be True or False"),
}


@pytest.mark.parametrize(("kwargs", "error", "fragment"), list(API_CASES.values()),
                         ids=list(API_CASES))  # fmt: skip
def test_sample_rejects_bad_arguments(oracle, kwargs, error, fragment):
    kwargs = {"theta": THETA, "n": 1, "steps": 2, "sampler": "ddim", **kwargs}
    with pytest.raises(error) as info:
        oracle.sample(**kwargs)
    assert fragment in str(info.value), str(info.value)


def test_the_reported_batch_size_case_no_longer_returns_garbage(oracle):
    # sample(..., batch_size=-1) used to return np.empty (~1e-310) without a word
    with pytest.raises(InputError, match=r"batch_size must be an integer >= 1 \(or None\), got -1"):
        oracle.sample(np.array([0.3, 0.8]), n=1, steps=5, sampler="ddim", batch_size=-1)


def test_good_arguments_still_work(oracle):
    a = oracle.sample(THETA, np.int64(2), steps=2.0, sampler="ddim", batch_size=None, seed=3)
    b = oracle.sample(torch.tensor([[0.3, 0.8]]), 2, steps=2, sampler="ddim", batch_size=1,
                      seed=3)  # fmt: skip
    assert a.shape == (2, 64, 64) and b.shape == (1, 2, 64, 64)
    assert np.all(np.isfinite(a)) and np.all(a > 0)
    np.testing.assert_allclose(a, b[0], rtol=1e-10)


# ------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    """Files and broken model directories named in the command-line cases."""
    d = tmp_path_factory.mktemp("emulate")
    (d / "a-file").write_text("x")
    (d / "no-card").mkdir()
    (d / "bad-json").mkdir()
    (d / "bad-json" / "card.json").write_text("{not json")
    src = resolve_model_dir("lognormal64")
    shutil.copytree(src, d / "no-weights")
    (d / "no-weights" / "weights.safetensors").unlink()
    shutil.copytree(src, d / "corrupt-weights")
    weights = d / "corrupt-weights" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    read_only = d / "read-only"
    read_only.mkdir()
    read_only.chmod(0o500)
    return {"dir": d, "a-file": d / "a-file", "no-card": d / "no-card",
            "bad-json": d / "bad-json", "no-weights": d / "no-weights",
            "corrupt-weights": d / "corrupt-weights", "read-only": read_only}  # fmt: skip


# (arguments replacing the defaults below, fragment of the one error line)
CLI_CASES = {
    "n-zero": (["--n", "0"], "--n must be an integer >= 1"),
    "n-negative": (["--n", "-3"], "--n must be an integer >= 1"),
    "n-too-many-for-memory": (["--n", str(10**12)], "more than this machine's memory"),
    "steps-zero": (["--steps", "0"], "--steps must be an integer >= 1"),
    "steps-negative": (["--steps", "-2"], "--steps must be an integer >= 1"),
    "steps-above-T": (["--steps", "5000"], "--steps must be an integer in [1, 1000]"),
    "steps-above-T-ddpm": (["--sampler", "ddpm", "--steps", "1001"], "--steps must be"),
    "omega-m-above-prior": (["--omega-m", "2"], "--omega-m must be a number in [0.1, 0.5]"),
    "omega-m-below-prior": (["--omega-m", "0.05"], "--omega-m must be a number in [0.1, 0.5]"),
    "omega-m-nan": (["--omega-m", "nan"], "--omega-m must be"),
    "omega-m-inf": (["--omega-m", "inf"], "--omega-m must be"),
    "sigma-8-nan": (["--sigma-8", "nan"], "--sigma-8 must be a number in [0.6, 1]"),
    "sigma-8-above-prior": (["--sigma-8", "1.5"], "--sigma-8 must be"),
    "sigma-8-negative": (["--sigma-8", "-0.8"], "--sigma-8 must be"),
    "seed-negative": (["--seed", "-1"], "--seed must be an integer >= 0"),
    "device-cuda": (["--device", "cuda"], "CUDA is not available"),
    "device-cuda-index": (["--device", "cuda:0"], "CUDA is not available"),
    "device-unknown": (["--device", "tpu"], "--device must be"),
    "device-empty": (["--device", ""], "--device must be"),
    "model-missing": (["--model", "/nonexistent/model"], "not found"),
    "model-empty-name": (["--model", ""], "a model name or directory is needed"),
    "model-unknown-name": (["--model", "Oracle"], "not found"),
    "model-is-a-file": (["--model", "{a-file}"], "not found: not a directory"),
    "model-without-card": (["--model", "{no-card}"], "model card not found"),
    "model-card-not-json": (["--model", "{bad-json}"], "is not valid JSON"),
    "model-weights-missing": (["--model", "{no-weights}"], "weights file missing"),
    "model-weights-corrupted": (["--model", "{corrupt-weights}"], "corrupted"),
    "out-is-a-file": (["--out", "{a-file}"], "exists and is not a directory"),
    "out-under-a-file": (["--out", "{a-file}/maps"], "cannot be created or written"),
}


def emulate_argv(extra: list[str], out: Path) -> list[str]:
    base = {"--model": "oracle", "--n": "1", "--sampler": "ddim", "--steps": "2",
            "--out": str(out)}  # fmt: skip
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        base[flag] = value
    return ["emulate", "--no-progress", *(x for kv in base.items() for x in kv)]


@pytest.fixture
def fast_oracle(oracle, monkeypatch):
    """``load_model("oracle")`` returns the module's oracle (building one takes ~1 s); every
    other name, and the device check, go through the real function."""
    import diffinfer.diffusion as diffusion
    from diffinfer.validation import check_device

    real = diffusion.load_model

    def load(name_or_path, *, device="cpu"):
        if str(name_or_path) == "oracle":
            check_device("device", device)
            return oracle
        return real(name_or_path, device=device)

    monkeypatch.setattr(diffusion, "load_model", load)


@pytest.mark.parametrize(("extra", "fragment"), list(CLI_CASES.values()), ids=list(CLI_CASES))
def test_emulate_rejects_bad_input_before_sampling(extra, fragment, paths, tmp_path, capsys,
                                                   monkeypatch, fast_oracle):  # fmt: skip
    from diffinfer.diffusion.model import DiffusionModel

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampling started before the inputs were checked")

    monkeypatch.setattr(DiffusionModel, "sample", no_sampling)
    out = tmp_path / "new" / "out"
    run_bad(fill(emulate_argv(extra, out), paths), capsys, fragment)
    assert not (tmp_path / "new").exists()  # nothing left behind


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only directories")  # fmt: skip
def test_emulate_out_in_a_read_only_directory(paths, capsys):
    out = paths["read-only"] / "out"
    run_bad(emulate_argv([], out), capsys, "cannot be created or written")
    assert not out.exists()


def test_emulate_writes_maps_and_figure(tmp_path, capsys, fast_oracle):
    out = tmp_path / "a" / "b"
    assert main(emulate_argv(["--n", "2"], out)) == 0
    maps = np.load(out / "maps.npy")
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32 and np.all(maps > 0)
    assert (out / "emulate.png").is_file()
    assert not list(out.glob(".diffinfer-write-test")) and not list(out.glob("*.partial*"))
    assert "wrote 2 maps" in capsys.readouterr().out


def test_load_model_refuses_broken_directories_with_data_file_errors(paths):
    for name, fragment in [("a-file", "not found"), ("no-card", "model card not found"),
                           ("bad-json", "not valid JSON"), ("no-weights", "weights file missing"),
                           ("corrupt-weights", "corrupted")]:  # fmt: skip
        with pytest.raises(DataFileError, match=fragment):
            load_model(paths[name])
    with pytest.raises(InputError, match="model name or directory is needed"):
        load_model("")
