"""Bad training configurations: every one is refused before anything is read or written.

Table-driven: each case is a configuration update (as a YAML file or ``--set`` would give
it), the exception type expected and a fragment of its message (the dotted key). Nothing
here trains: the checks run before any data is read or any directory is made.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from diffinfer.cli import main
from diffinfer.errors import DataFileError, InputError
from diffinfer.training.config import DEFAULTS, check_config, load_config, parse_override
from diffinfer.training.run import train
from diffinfer.validation import check_device

ROOT = Path(__file__).resolve().parents[1]

# (id, configuration update, exception type, message fragment)
BAD_CONFIGS: list[tuple[str, dict, type[Exception], str]] = [
    # train
    ("steps-negative", {"train": {"steps": -5}}, InputError,
     "train.steps must be an integer >= 1, got -5"),
    ("steps-zero", {"train": {"steps": 0}}, InputError, "train.steps"),
    ("steps-fraction", {"train": {"steps": 2.5}}, InputError, "train.steps"),
    ("steps-word", {"train": {"steps": "many"}}, InputError, "train.steps"),
    ("steps-bool", {"train": {"steps": True}}, InputError, "train.steps"),
    ("batch-size-zero", {"train": {"batch_size": 0}}, InputError, "train.batch_size"),
    ("lr-negative", {"train": {"lr": -1.0}}, InputError, "train.lr"),
    ("lr-zero", {"train": {"lr": 0}}, InputError, "train.lr"),
    ("lr-nan", {"train": {"lr": math.nan}}, InputError, "train.lr"),
    ("lr-text", {"train": {"lr": "fast"}}, InputError, "train.lr"),
    ("min-lr-above-lr", {"train": {"lr": 1e-4, "min_lr": 1e-3}}, InputError, "train.min_lr"),
    ("warmup-negative", {"train": {"warmup": -1}}, InputError, "train.warmup"),
    ("weight-decay-negative", {"train": {"weight_decay": -0.1}}, InputError,
     "train.weight_decay"),
    ("grad-clip-zero", {"train": {"grad_clip": 0}}, InputError, "train.grad_clip"),
    ("ema-decay-two", {"train": {"ema_decay": 2}}, InputError, "train.ema_decay"),
    ("ema-decay-one", {"train": {"ema_decay": 1.0}}, InputError, "train.ema_decay"),
    ("augment-string", {"train": {"augment": "yes"}}, InputError, "train.augment"),
    ("precision-fp16", {"train": {"precision": "fp16"}}, InputError, "train.precision"),
    ("seed-negative", {"train": {"seed": -1}}, InputError, "train.seed"),
    ("device-gpu", {"train": {"device": "gpu"}}, InputError, "train.device"),
    ("device-cuda-99", {"train": {"device": "cuda:99"}}, InputError, "train.device"),
    ("device-meta", {"train": {"device": "meta"}}, InputError, "train.device"),
    ("threads-zero", {"train": {"threads": 0}}, InputError, "train.threads"),
    ("max-minutes-negative", {"train": {"max_minutes": -1}}, InputError, "train.max_minutes"),
    # validation and checkpoints
    ("validation-every-zero", {"validation": {"every": 0}}, InputError, "validation.every"),
    ("validation-n-maps-zero", {"validation": {"n_maps": 0}}, InputError, "validation.n_maps"),
    ("bands-decreasing", {"validation": {"bands": [10, 5]}}, InputError, "validation.bands"),
    ("bands-beyond-T", {"validation": {"bands": [1, 2000]}}, InputError, "validation.bands"),
    ("bands-one-edge", {"validation": {"bands": [1]}}, InputError, "validation.bands"),
    ("bands-zero", {"validation": {"bands": [0, 10]}}, InputError, "validation.bands[0]"),
    ("validation-seed-negative", {"validation": {"seed": -1}}, InputError, "validation.seed"),
    ("checkpoint-minutes-negative", {"checkpoint": {"every_minutes": -1}}, InputError,
     "checkpoint.every_minutes"),
    ("checkpoint-steps-zero", {"checkpoint": {"every_steps": 0}}, InputError,
     "checkpoint.every_steps"),
    # data
    ("fractions-no-validation", {"data": {"fractions": [1, 0, 0]}}, InputError,
     "data.fractions"),
    ("fractions-two", {"data": {"fractions": [0.5, 0.5]}}, InputError, "data.fractions"),
    ("fractions-sum", {"data": {"fractions": [0.7, 0.2, 0.2]}}, InputError, "data.fractions"),
    ("fractions-negative", {"data": {"fractions": [0.8, 0.3, -0.1]}}, InputError,
     "data.fractions[2]"),
    ("split-seed-negative", {"data": {"split_seed": -1}}, InputError, "data.split_seed"),
    ("n-pix-zero", {"data": {"n_pix": 0}}, InputError, "data.n_pix"),
    ("n-pix-indivisible", {"data": {"n_pix": 30}}, InputError, "data.n_pix"),
    ("maps-per-cosmology-zero", {"data": {"maps_per_cosmology": 0}}, InputError,
     "data.maps_per_cosmology"),
    ("box-size-zero", {"data": {"box_size": 0}}, InputError, "data.box_size"),
    ("depth-negative", {"data": {"depth": -5}}, InputError, "data.depth"),
    ("transform-unknown", {"data": {"transform": "log"}}, InputError, "data.transform"),
    ("transform-scale-zero", {"data": {"transform": {"shift": 0, "scale": 0}}}, InputError,
     "data.transform"),
    ("transform-no-scale", {"data": {"transform": {"shift": 0}}}, InputError,
     "data.transform"),
    ("prior-reversed", {"data": {"prior": {"Omega_m": [0.5, 0.1], "sigma_8": [0.6, 1.0]}}},
     InputError, "data.prior"),
    ("prior-typo", {"data": {"prior": {"Omega_M": [0.1, 0.5], "sigma_8": [0.6, 1.0]}}},
     InputError, "did you mean 'data.prior.Omega_m'"),
    ("field-empty", {"data": {"field": ""}}, InputError, "data.field"),
    ("suite-slash", {"data": {"suite": "a/b"}}, InputError, "data.suite"),
    # model and schedule
    ("base-channels-zero", {"model": {"base_channels": 0}}, InputError, "model.base_channels"),
    ("base-channels-vs-groups", {"model": {"base_channels": 12}}, InputError, "model.groups"),
    ("channel-mults-empty", {"model": {"channel_mults": []}}, InputError,
     "model.channel_mults"),
    ("channel-mults-zero", {"model": {"channel_mults": [1, 0]}}, InputError,
     "model.channel_mults[1]"),
    ("attention-level-missing", {"model": {"attention_levels": [5]}}, InputError,
     "model.attention_levels"),
    ("attention-level-negative", {"model": {"attention_levels": [-1]}}, InputError,
     "model.attention_levels[0]"),
    ("attention-heads", {"model": {"base_channels": 2, "groups": 2, "channel_mults": [1, 3]}},
     InputError, "heads"),
    ("blocks-zero", {"model": {"blocks_per_level": 0}}, InputError, "model.blocks_per_level"),
    ("embed-dim-zero", {"model": {"embed_dim": 0}}, InputError, "model.embed_dim"),
    ("groups-zero", {"model": {"groups": 0}}, InputError, "model.groups"),
    ("spectral-string", {"model": {"spectral": "true"}}, InputError, "model.spectral"),
    ("schedule-kind", {"schedule": {"kind": "quadratic"}}, InputError, "schedule.kind"),
    ("schedule-one-step", {"schedule": {"n_steps": 1}}, InputError, "schedule.n_steps"),
    # top level and structure
    ("name-empty", {"name": ""}, InputError, "name must be"),
    ("init-from-number", {"init_from": 5}, InputError, "init_from"),
    ("unknown-key-typo", {"train": {"stpes": 3}}, InputError,
     "unknown configuration key 'train.stpes'; did you mean 'train.steps'?"),
    ("unknown-section-typo", {"trian": {"steps": 3}}, InputError, "did you mean 'train'"),
    ("unknown-top-key", {"bogus": 1}, InputError, "unknown configuration key 'bogus'"),
    ("section-not-mapping", {"train": 5}, InputError, "'train' must be a mapping"),
]  # fmt: skip

CASES = [
    pytest.param(update, exc, fragment, id=name) for name, update, exc, fragment in BAD_CONFIGS
]


def _update(base: dict, update: dict) -> dict:
    """``base`` deep-updated by ``update``, with no checks at all (a config built in code)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def test_the_table_is_large_and_distinct():
    names = [c[0] for c in BAD_CONFIGS]
    assert len(names) == len(set(names)) >= 30
    assert len({repr(c[1]) for c in BAD_CONFIGS}) == len(BAD_CONFIGS)


@pytest.mark.parametrize(("update", "exc", "fragment"), CASES)
def test_bad_config_is_refused_before_anything_is_written(tmp_path, update, exc, fragment):
    out = tmp_path / "run"
    base = {"out": str(out), "data": {"root": str(tmp_path / "no-data")}}
    with pytest.raises(exc) as info:
        load_config(None, [base, update])
    assert fragment in str(info.value)
    # the same configuration built in code and handed to train() directly
    raw = _update(_update(DEFAULTS, base), update)
    with pytest.raises(exc) as info:
        train(raw, progress=False)
    assert fragment in str(info.value)
    assert not out.exists()


@pytest.mark.parametrize(("update", "exc", "fragment"), CASES)
def test_bad_config_file_is_refused(tmp_path, update, exc, fragment):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(update))
    with pytest.raises(exc) as info:
        load_config(path)
    assert fragment in str(info.value)


# (id, --set text, exception type, message fragment)
BAD_OVERRIDES = [
    ("no-equals", "train.steps", InputError, "section.key=value"),
    ("empty-key", "=5", InputError, "empty key"),
    ("empty-section", "train..lr=1", InputError, "empty key"),
    ("not-yaml", "train.lr=[1,", InputError, "not valid YAML"),
    ("negative-lr", "train.lr=-1", InputError, "train.lr"),
    ("unknown", "bogus=1", InputError, "unknown configuration key 'bogus'"),
    ("fractions", "data.fractions=[1, 0, 0]", InputError, "data.fractions"),
    ("every-zero", "validation.every=0", InputError, "validation.every"),
]


@pytest.mark.parametrize(
    ("text", "exc", "fragment"), [pytest.param(*c[1:], id=c[0]) for c in BAD_OVERRIDES]
)
def test_bad_override(text, exc, fragment):
    with pytest.raises(exc) as info:
        load_config(None, [parse_override(text)])
    assert fragment in str(info.value)


# (id, file content (bytes), exception type, message fragment)
BAD_FILES = [
    ("unclosed-list", b"train: {steps: [1, 2}\n", DataFileError, "as YAML"),
    ("bad-indent", b"train:\n  steps: 3\n lr: 1\n", DataFileError, "as YAML"),
    ("a-list", b"- 1\n- 2\n", DataFileError, "mapping"),
    ("a-scalar", b"hello world\n", DataFileError, "mapping"),
    ("binary", b"\xff\xfe\x00\x81garbage", DataFileError, "cannot read"),
    ("unknown-key", b"train: {learning_rate: 1.0e-3}\n", InputError, "config.yaml"),
]


@pytest.mark.parametrize(
    ("content", "exc", "fragment"), [pytest.param(*c[1:], id=c[0]) for c in BAD_FILES]
)
def test_bad_config_file_content(tmp_path, content, exc, fragment):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(exc) as info:
        load_config(path)
    assert fragment in str(info.value)
    if exc is DataFileError:
        assert str(path) in str(info.value)
        assert "\n" not in str(info.value)


def test_missing_config_file_or_a_directory(tmp_path):
    with pytest.raises(DataFileError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(DataFileError, match="not a file"):
        load_config(tmp_path)


def _no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# (id, argv after "train" (OUT: the run directory), message fragment, file to write)
CLI_CASES = [
    ("steps", ["--steps", "-5"], "train.steps must be an integer >= 1, got -5"),
    ("set-bogus", ["--set", "bogus=1"], "unknown configuration key 'bogus'"),
    ("set-lr", ["--set", "train.lr=-1"], "train.lr"),
    ("set-no-equals", ["--set", "train.lr"], "section.key=value"),
    ("set-typo", ["--set", "train.stpes=3"], "did you mean 'train.steps'"),
    ("device-cuda", ["--device", "cuda"], "CUDA is not available on this machine"),
    ("device-gpu", ["--device", "gpu"], "train.device"),
    ("config-missing", ["--config", "{tmp}/absent.yaml"], "not found"),
    ("config-not-yaml", ["--config", "{tmp}/bad.yaml"], "as YAML"),
    ("config-bad-value", ["--config", "{tmp}/steps.yaml"], "train.steps"),
    ("fractions", ["--set", "data.fractions=[1, 0, 0]"], "data.fractions"),
]


@pytest.mark.parametrize(("args", "fragment"), [pytest.param(*c[1:], id=c[0]) for c in CLI_CASES])
def test_cli_train_bad_input(tmp_path, capsys, monkeypatch, args, fragment):
    _no_cuda(monkeypatch)
    (tmp_path / "bad.yaml").write_text("train: {steps: [1, 2}\n")
    (tmp_path / "steps.yaml").write_text("train:\n  steps: -5\n")
    out = tmp_path / "run"
    argv = ["train", *(a.format(tmp=tmp_path) for a in args), "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("diffinfer: error:")
    assert fragment in lines[0]
    assert "Traceback" not in err
    assert not out.exists()


def test_default_and_shipped_configs_pass():
    checked = check_config(DEFAULTS)
    assert checked == DEFAULTS and checked is not DEFAULTS
    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert files
    for path in files:
        config = load_config(path)
        assert check_config(config) == config, path.name


def test_check_config_normalises_a_copy():
    raw = _update(DEFAULTS, {"train": {"lr": "1e-4", "steps": 10.0}, "out": Path("x")})
    checked = check_config(raw)
    assert checked["train"]["lr"] == 1e-4 and checked["train"]["steps"] == 10
    assert isinstance(checked["train"]["steps"], int) and checked["out"] == "x"
    assert raw["train"]["lr"] == "1e-4"  # the input is left alone


def test_check_config_needs_every_key():
    raw = copy.deepcopy(DEFAULTS)
    del raw["train"]["lr"]
    with pytest.raises(InputError, match=r"lacks the key 'train\.lr'"):
        check_config(raw)
    with pytest.raises(InputError, match="mapping"):
        check_config([1, 2])


def test_zero_steps_only_with_init_from():
    config = load_config(None, [{"train": {"steps": 0}, "init_from": "some-model"}])
    assert config["train"]["steps"] == 0
    with pytest.raises(InputError, match="0 only with init_from"):
        load_config(None, [{"train": {"steps": 0}}])


def test_check_device(monkeypatch):
    assert check_device("device", "cpu") == torch.device("cpu")
    assert check_device("device", torch.device("cpu")) == torch.device("cpu")
    for bad in ("gpu", "", 3, None, "meta", "cuda:x"):
        with pytest.raises(InputError, match=r"device must be 'cpu', 'cuda'"):
            check_device("device", bad)
    _no_cuda(monkeypatch)
    for name in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(InputError, match="CUDA is not available on this machine; use"):
            check_device("device", name)
