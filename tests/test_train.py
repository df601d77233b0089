"""Training: tiny runs, exact resumption after a kill, init-from, DDP on gloo, configuration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from diffinfer.cli import main
from diffinfer.data import write_synthetic_dataset
from diffinfer.diffusion import load_model
from diffinfer.errors import DataFileError, InputError
from diffinfer.fields import FieldConfig
from diffinfer.training.config import load_config
from diffinfer.training.run import batch_plan, learning_rate, train
from diffinfer.training.state import LEGACY_STATE_FILE, STATE_FILE, read_training_state

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    write_synthetic_dataset(
        out,
        n_cosmologies=20,
        maps_per_cosmology=4,
        config=FieldConfig(n_pix=16, box_size=125.0, depth=50.0),
        seed=0,
        progress=False,
    )
    return out


def tiny_config(data_dir: Path, out: Path, **train_overrides) -> dict:
    config = {
        "out": str(out),
        "data": {"root": str(data_dir)},
        "model": {"base_channels": 8, "channel_mults": [1, 2], "embed_dim": 16, "groups": 4},
        "schedule": {"n_steps": 100},
        "train": {"steps": 6, "batch_size": 8, "warmup": 2, "threads": 1, **train_overrides},
        "validation": {"every": 3, "n_maps": 8, "bands": [1, 10, 100]},
        "checkpoint": {"every_minutes": 100.0, "every_steps": 2},
    }
    return load_config(None, [config])


def _state(path: Path) -> dict:
    return read_training_state(path / STATE_FILE)


def _assert_same_state(a: dict, b: dict) -> None:
    assert int(a["step"]) == int(b["step"])
    for part in ("model", "ema"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=0, msg=k)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    for i in sa:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(sa[i][k], sb[i][k], rtol=0, atol=0)


def test_tiny_run_writes_a_loadable_model_and_is_deterministic(data_dir, tmp_path):
    result = train(tiny_config(data_dir, tmp_path / "a"), progress=False)
    train(tiny_config(data_dir, tmp_path / "b"), progress=False)
    _assert_same_state(_state(tmp_path / "a"), _state(tmp_path / "b"))
    assert result["step"] == 6 and not result["stopped_early"]
    model = load_model(result["model_dir"])
    card = model.card
    assert card["training"]["steps"] == 6
    assert card["data"]["n_train_maps"] == 14 * 4  # 70 % of 20 cosmologies, whole cosmologies
    val = card["metrics"]["validation"]
    assert set(val["loss"]) == {"1-9", "10-100"} and val["step"] == 6
    # log-normal data: the oracle is reported and no network beats it beyond noise
    for band in val["loss"]:
        assert val["excess"][band] > -3 * val["excess_se"][band]
    records = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert any("validation" in r for r in records)
    maps = model.sample(np.array([0.3, 0.8]), 2, sampler="ddim", steps=5)
    assert maps.shape == (2, 16, 16) and np.all(np.isfinite(maps))


def test_time_limit_stop_then_resume_equals_an_uninterrupted_run(data_dir, tmp_path):
    full = train(tiny_config(data_dir, tmp_path / "full"), progress=False)
    part = train(tiny_config(data_dir, tmp_path / "part", max_minutes=1e-9), progress=False)
    assert part["stopped_early"] and part["step"] == 1
    assert int(_state(tmp_path / "part")["step"]) == 1
    resumed = train(tiny_config(data_dir, tmp_path / "part"), resume=True, progress=False)
    assert resumed["step"] == full["step"] == 6
    again = train(tiny_config(data_dir, tmp_path / "part"), resume=True, progress=False)
    assert again["validation"] == resumed["validation"]  # a finished run keeps its metrics
    assert load_model(again["model_dir"]).card["metrics"]["validation"]["step"] == 6
    _assert_same_state(_state(tmp_path / "full"), _state(tmp_path / "part"))


def test_resume_after_sigkill_continues_exactly(data_dir, tmp_path):
    """Kill a training process after its first checkpoint, resume, compare with a clean run."""
    steps = 60
    cfg = tiny_config(data_dir, tmp_path / "killed", steps=steps)
    cfg_path = tmp_path / "config.json"  # JSON is YAML
    cfg_path.write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "diffinfer", "train", "--config", str(cfg_path), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = tmp_path / "killed" / STATE_FILE
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(_state(tmp_path / "killed")["step"])
    assert killed_at < steps, "the run finished before it could be killed"
    subprocess.run([*cmd, "--resume"], env=env, check=True, capture_output=True)
    train(tiny_config(data_dir, tmp_path / "clean", steps=steps), progress=False)
    _assert_same_state(_state(tmp_path / "clean"), _state(tmp_path / "killed"))
    log = (tmp_path / "killed" / "log.jsonl").read_text().splitlines()
    logged = [json.loads(x)["step"] for x in log if '"loss"' in x and "validation" not in x]
    assert logged == sorted(set(logged))  # no step logged twice across the kill


def test_init_from_a_smaller_resolution(data_dir, tmp_path):
    small = train(tiny_config(data_dir, tmp_path / "small"), progress=False)
    big_data = tmp_path / "data32"
    write_synthetic_dataset(
        big_data, n_cosmologies=20, maps_per_cosmology=4,
        config=FieldConfig(n_pix=32, box_size=250.0, depth=50.0), progress=False,
    )  # fmt: skip
    cfg = tiny_config(big_data, tmp_path / "big")
    cfg["init_from"] = small["model_dir"]
    cfg["train"]["steps"] = 0  # save the transferred weights untrained (only with init_from)
    big = train(cfg, progress=False)
    source, target = load_model(small["model_dir"]), load_model(big["model_dir"])
    assert target.field.n_pix == 32 and source.field.n_pix == 16
    for k, v in source.denoiser.state_dict().items():
        torch.testing.assert_close(target.denoiser.state_dict()[k], v, rtol=0, atol=0)
    assert target.card["training"]["config"]["init_from"] == small["model_dir"]
    cfg["model"]["base_channels"] = 16
    cfg["out"] = str(tmp_path / "bad")
    with pytest.raises(InputError, match="architecture differs"):
        train(cfg, progress=False)


def test_bf16_training_runs(data_dir, tmp_path):
    result = train(tiny_config(data_dir, tmp_path / "bf16", precision="bf16"), progress=False)
    assert np.isfinite(result["validation"]["loss_mean"])


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs gloo")
def test_ddp_on_gloo_with_two_processes_matches_one_process(data_dir, tmp_path):
    cfg = tiny_config(data_dir, tmp_path / "ddp", steps=3)
    cfg["validation"]["every"] = 100
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "diffinfer", "train", "--config", str(cfg_path), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    cfg["out"] = str(tmp_path / "single")
    train(cfg, progress=False)
    a, b = _state(tmp_path / "ddp"), _state(tmp_path / "single")
    assert int(a["step"]) == int(b["step"]) == 3
    card = json.loads((tmp_path / "ddp" / "model" / "card.json").read_text())
    assert card["training"]["processes"] == 2
    # same global batches; only the order of the gradient sums differs
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5, msg=k)


def test_batches_cover_every_map_once_per_epoch_and_lr_schedule():
    seen = np.concatenate([batch_plan(50, 10, 100, 0, s, True)["index"].numpy() for s in range(5)])
    assert sorted(seen) == list(range(50))
    cfg = load_config(None, [{"train": {"steps": 100, "warmup": 10, "lr": 1e-3, "min_lr": 0}}])
    assert learning_rate(cfg, 0) == pytest.approx(1e-4)
    assert learning_rate(cfg, 10) == pytest.approx(1e-3)
    assert learning_rate(cfg, 100) == pytest.approx(0.0, abs=1e-12)


def test_configuration_errors(data_dir, tmp_path):
    with pytest.raises(InputError, match=r"unknown configuration key 'train.learning_rate'"):
        load_config(None, [{"train": {"learning_rate": 1}}])
    with pytest.raises(DataFileError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(InputError, match=r"data\.root"):
        train(load_config(None, [{"out": str(tmp_path / "x")}]), progress=False)
    train(tiny_config(data_dir, tmp_path / "run", steps=2), progress=False)
    with pytest.raises(InputError, match="--resume"):
        train(tiny_config(data_dir, tmp_path / "run", steps=2), progress=False)
    bad = tiny_config(data_dir, tmp_path / "bands")
    bad["validation"]["bands"] = [1, 10, 10, 100]
    with pytest.raises(InputError, match="strictly increasing"):
        train(bad, progress=False)
    with pytest.raises(InputError, match=r"train\.lr"):
        train(tiny_config(data_dir, tmp_path / "run", steps=4, lr=0.5), resume=True)


def test_train_and_emulate_commands(data_dir, tmp_path, capsys):
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text(
        f"data: {{root: {data_dir}}}\n"
        "model: {base_channels: 8, channel_mults: [1, 2], embed_dim: 16, groups: 4}\n"
        "schedule: {n_steps: 50}\n"
        "validation: {n_maps: 4, bands: [1, 50]}\n"
    )
    out = tmp_path / "cli-run"
    argv = ["train", "--config", str(yaml_path), "--out", str(out), "--steps", "2",
            "--set", "train.batch_size=4", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "training done at step 2" in capsys.readouterr().out
    assert main(["train", "--config", str(yaml_path), "--set", "train.nope=1"]) == 2
    assert "unknown configuration key 'train.nope'" in capsys.readouterr().err
    em = tmp_path / "em"
    argv = ["emulate", "--model", str(out / "model"), "--n", "3", "--sampler", "ddim",
            "--steps", "4", "--out", str(em), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    maps = np.load(em / "maps.npy")
    assert maps.shape == (3, 16, 16) and (em / "emulate.png").stat().st_size > 1000
    assert main(["emulate", "--model", str(tmp_path / "none"), "--out", str(em)]) == 2


def test_a_run_started_with_a_torch_state_resumes_and_replaces_it(data_dir, tmp_path):
    """A run stopped by the code that wrote ``state.pt`` (a torch file) resumes from it and
    ends where an uninterrupted run ends; its next checkpoint is the safetensors state,
    and the old file is gone."""
    train(tiny_config(data_dir, tmp_path / "full"), progress=False)
    train(tiny_config(data_dir, tmp_path / "old", max_minutes=1e-9), progress=False)
    state = read_training_state(tmp_path / "old" / STATE_FILE)
    state["step"], state["elapsed"] = torch.tensor(state["step"]), torch.tensor(1.0)
    torch.save(state, tmp_path / "old" / LEGACY_STATE_FILE)  # as the earlier code wrote it
    (tmp_path / "old" / STATE_FILE).unlink()
    with pytest.raises(InputError, match="already holds a training run"):
        train(tiny_config(data_dir, tmp_path / "old"), progress=False)
    train(tiny_config(data_dir, tmp_path / "old"), resume=True, progress=False)
    assert not (tmp_path / "old" / LEGACY_STATE_FILE).exists()
    _assert_same_state(_state(tmp_path / "full"), _state(tmp_path / "old"))


def test_a_full_disk_at_a_checkpoint_names_the_state_and_keeps_the_last_one(
    data_dir, tmp_path, monkeypatch
):
    """The safetensors writer reports a full disk as its own error: the run stops with one
    naming the state file and the fix, and the checkpoint before it is kept whole."""
    import safetensors.torch
    from safetensors import SafetensorError

    train(tiny_config(data_dir, tmp_path / "full", max_minutes=1e-9), progress=False)
    before = _state(tmp_path / "full")

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(DataFileError, match=r"cannot write .*state.safetensors.*free disk space"):
        train(tiny_config(data_dir, tmp_path / "full"), resume=True, progress=False)
    _assert_same_state(before, _state(tmp_path / "full"))
    assert not list((tmp_path / "full").glob(".*partial"))


def test_a_truncated_training_state_is_refused_naming_the_file(data_dir, tmp_path):
    train(tiny_config(data_dir, tmp_path / "cut", max_minutes=1e-9), progress=False)
    state = tmp_path / "cut" / STATE_FILE
    os.truncate(state, state.stat().st_size // 2)
    with pytest.raises(DataFileError,
                       match=r"cannot resume from .*state.safetensors: it is damaged"):  # fmt: skip
        train(tiny_config(data_dir, tmp_path / "cut"), resume=True, progress=False)
