"""Synthetic data sets from the log-normal simulator, written in the CAMELS CMD format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.stats import qmc
from tqdm.auto import tqdm

from diffinfer.data.camels import (
    MAPS_PER_COSMOLOGY,
    PARAM_COLUMNS,
    maps_filename,
    params_filenames,
)
from diffinfer.errors import DataFileError, InputError
from diffinfer.fields.grid import FieldConfig
from diffinfer.fields.lognormal import LognormalSimulator
from diffinfer.io import write_json_atomic
from diffinfer.parameters import DEFAULT_PRIOR, PriorBox
from diffinfer.validation import check_int

SYNTHETIC_SUITE = "Lognormal"


def latin_hypercube(n: int, prior: PriorBox = DEFAULT_PRIOR, seed: int = 0) -> np.ndarray:
    """A seeded Latin hypercube of ``n`` points over the prior box, shape (n, 2)."""
    if int(n) != n or n < 1:
        raise InputError(f"the number of cosmologies must be a positive integer, got {n}")
    u = qmc.LatinHypercube(d=2, seed=np.random.default_rng(seed)).random(n)
    return qmc.scale(u, prior.low, prior.high)


def write_synthetic_dataset(
    out_dir: str | os.PathLike,
    *,
    n_cosmologies: int = 1000,
    maps_per_cosmology: int = MAPS_PER_COSMOLOGY,
    config: FieldConfig | None = None,
    seed: int = 0,
    field: str = "Mtot",
    set_name: str = "LH",
    chunk: int = 50,
    progress: bool = True,
) -> Path:
    """Simulate a Latin-hypercube data set and write it in the CMD layout.

    Writes ``Maps_{field}_Lognormal_{set}_z=0.00.npy`` (float32 densities with mean 1),
    ``params_{set}_Lognormal.txt`` (six CMD columns; the four astrophysical ones are 1,
    the fiducial values) and ``dataset.json`` (simulator configuration and seed). Files
    appear under their final names only when complete.

    Parameters
    ----------
    out_dir
        Directory to write into (created if needed).
    n_cosmologies, maps_per_cosmology
        Size of the data set (CMD: 1,000 x 15).
    config
        Map geometry and prior; default :class:`~diffinfer.fields.FieldConfig`.
    seed
        Seeds both the hypercube and the maps; the same seed gives the same files.
    field, set_name
        CMD name components.
    chunk
        Cosmologies simulated at once.
    progress
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        Path of the maps file.
    """
    check_int("n_cosmologies", n_cosmologies, low=1)
    check_int("maps_per_cosmology", maps_per_cosmology, low=1)
    check_int("seed", seed, low=0)
    check_int("chunk", chunk, low=1)
    for name, value in (("field", field), ("set_name", set_name)):
        if not (isinstance(value, str) and value.replace("-", "").isalnum()):
            raise InputError(f"{name} must be letters and digits (a CMD file-name part), "
                             f"got {value!r}")  # fmt: skip
    config = config or FieldConfig()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataFileError(f"{out} exists and is not a directory; choose another output path")
    out.mkdir(parents=True, exist_ok=True)
    sim = LognormalSimulator(config)
    # rounded to the precision of the parameter file, so that the file is exact for the maps
    theta = np.round(latin_hypercube(n_cosmologies, config.prior, seed), 6)
    n = config.n_pix
    maps_path = out / maps_filename(field, SYNTHETIC_SUITE, set_name)
    tmp = maps_path.with_name(maps_path.name + ".partial")
    arr = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.float32, shape=(n_cosmologies * maps_per_cosmology, n, n)
    )
    with tqdm(total=n_cosmologies, desc="simulating", unit="cosmo", disable=not progress) as bar:
        for i in range(0, n_cosmologies, chunk):
            rows = theta[i : i + chunk]
            maps = sim.simulate(rows, maps_per_cosmology, seed, row_offset=i)
            arr[i * maps_per_cosmology : (i + len(rows)) * maps_per_cosmology] = maps.reshape(
                -1, n, n
            )
            bar.update(len(rows))
    arr.flush()
    del arr
    params = np.ones((n_cosmologies, len(PARAM_COLUMNS)))
    params[:, :2] = theta
    params_path = out / params_filenames(SYNTHETIC_SUITE, set_name)[0]
    tmp_params = params_path.with_name(params_path.name + ".partial")
    with open(tmp_params, "w") as fh:
        np.savetxt(fh, params, fmt="%.6f", header=" ".join(PARAM_COLUMNS))
    os.replace(tmp_params, params_path)
    os.replace(tmp, maps_path)
    write_json_atomic(
        out / "dataset.json",
        {
            "simulator": "lognormal",
            "field": field,
            "suite": SYNTHETIC_SUITE,
            "set": set_name,
            "n_cosmologies": n_cosmologies,
            "maps_per_cosmology": maps_per_cosmology,
            "seed": seed,
            "config": config.to_dict(),
            "units": "density rho / mean(rho) (mean 1)",
        },
    )
    return maps_path
