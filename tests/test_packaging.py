"""The package installs whole: a wheel built from the repository carries the shipped models
(the top-level models/ folder, mapped to the package diffinfer.models), and they load by name
from outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (the checkout is left untouched)."""
    pytest.importorskip("setuptools")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("diffinfer", "models"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
           "--no-index", "-q", "-w", str(dist), str(src)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (path,) = dist.glob("diffinfer-*.whl")
    return path


def test_wheel_holds_the_shipped_models(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for model in (ROOT / "models").iterdir():
        if model.name in ("__init__.py", "__pycache__"):
            continue
        if model.is_file():  # a fitted power-spectrum likelihood (.npz)
            assert f"diffinfer/models/{model.name}" in names
            continue
        files = [f for f in model.rglob("*") if f.name in ("card.json", "weights.safetensors")]
        assert any(f.name == "card.json" for f in files), model
        for file in files:  # an ensemble's members lie one level down
            assert f"diffinfer/models/{file.relative_to(ROOT / 'models').as_posix()}" in names


def test_installed_wheel_loads_the_default_model_outside_the_checkout(wheel, tmp_path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip install puts in site-packages
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import diffinfer as di, numpy as np\n"
        "print(di.__file__)\n"
        "for name in ('lognormal64', 'nbody64'):\n"
        "    m = di.load_model(name)\n"
        "    print(m.card['name'], m.field.n_pix)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("DIFFINFER_MODEL_PATH", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    first, *models = done.stdout.splitlines()
    assert first.startswith(str(site))  # the wheel's copy, not the checkout's
    assert models == ["lognormal64 64", "nbody64 64"]
