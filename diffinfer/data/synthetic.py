"""Synthetic data sets (log-normal or particle-mesh N-body maps) in the CAMELS CMD format."""

from __future__ import annotations

import os
import sys
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
from diffinfer.io import directory_lock, read_json, same_json, write_json_atomic
from diffinfer.parameters import DEFAULT_PRIOR, PriorBox
from diffinfer.simulators.lognormal import LognormalSimulator
from diffinfer.simulators.nbody import NBODY_SUITE
from diffinfer.validation import check_int

SYNTHETIC_SUITE = "Lognormal"


def latin_hypercube(n: int, prior: PriorBox = DEFAULT_PRIOR, seed: int = 0) -> np.ndarray:
    """A seeded Latin hypercube of ``n`` points over the prior box, shape (n, 2)."""
    if int(n) != n or n < 1:
        raise InputError(f"the number of cosmologies must be a positive integer, got {n}")
    u = qmc.LatinHypercube(d=2, seed=np.random.default_rng(seed)).random(n)
    return qmc.scale(u, prior.low, prior.high)


SIMULATORS = ("lognormal", "nbody")
"""The simulators a data set can be written with (``diffinfer simulate --simulator``)."""

_PROGRESS = "dataset.partial.json"


def make_simulator(simulator: str = "lognormal", config: object | None = None):
    """The simulator behind a data set: ``"lognormal"`` (config a
    :class:`~diffinfer.fields.FieldConfig`) or ``"nbody"`` (an
    :class:`~diffinfer.simulators.nbody.NBodyConfig`)."""
    from diffinfer.simulators.nbody import NBodyConfig, NBodySimulator

    if simulator not in SIMULATORS:
        raise InputError(f"simulator must be one of {list(SIMULATORS)}, got {simulator!r}")
    kind = NBodyConfig if simulator == "nbody" else FieldConfig
    if config is not None and not isinstance(config, kind):
        raise InputError(f"the {simulator} simulator takes a {kind.__name__} as config, got "
                         f"{type(config).__name__}")  # fmt: skip
    if simulator == "nbody":
        return NBodySimulator(config)
    return LognormalSimulator(config or FieldConfig())


def _description(sim, n_cosmologies: int, maps_per_cosmology: int, seed: int, field: str,
                 set_name: str) -> dict:  # fmt: skip
    nbody = getattr(sim, "name", "lognormal") == "nbody"
    return {
        "simulator": "nbody" if nbody else "lognormal",
        "field": field,
        "suite": NBODY_SUITE if nbody else SYNTHETIC_SUITE,
        "set": set_name,
        "n_cosmologies": n_cosmologies,
        "maps_per_cosmology": maps_per_cosmology,
        "seed": seed,
        "config": sim.config.to_dict(),
        "units": "density rho / mean(rho) (mean 1)",
    }


def _same(a: dict, b: dict) -> bool:
    keys = ("simulator", "field", "suite", "set", "n_cosmologies", "maps_per_cosmology",
            "seed", "config")  # fmt: skip
    return same_json([a.get(k) for k in keys], [b.get(k) for k in keys])


def _claim(out: Path, meta: dict, maps_name: str) -> str:
    """Check that ``out`` may receive this data set: ``"new"``, ``"resume"`` or ``"done"``.

    A directory holding another data set (another simulator, settings or seed, or maps
    files of another name) is refused, never overwritten.
    """
    what = (f"{meta['simulator']} data set ({meta['n_cosmologies']} cosmologies, seed "
            f"{meta['seed']})")  # fmt: skip
    for name in ("dataset.json", _PROGRESS):
        path = out / name
        if path.is_file():
            old = read_json(path, what="data set description")
            if not _same(old, meta):
                keys = ("simulator", "n_cosmologies", "maps_per_cosmology", "seed", "set",
                        "config")  # fmt: skip
                differ = [k for k in keys if old.get(k) != meta.get(k)]
                raise DataFileError(
                    f"{out} already holds a {old.get('simulator', 'unknown')} data set "
                    f"({name}; it differs in {', '.join(differ) or 'its names'}), not the "
                    f"{what} asked for: choose another output directory (it is not "
                    "overwritten)"
                )
    others = sorted(p.name for p in out.glob("Maps_*.npy") if p.name != maps_name)
    if others:
        raise DataFileError(
            f"{out} already holds other maps ({', '.join(others)}): choose another output "
            "directory for the " + what + " (nothing there is overwritten)"
        )
    if (out / "dataset.json").is_file() and (out / maps_name).is_file():
        return "done"
    if (out / _PROGRESS).is_file() and (out / (maps_name + ".partial")).is_file():
        return "resume"
    return "new"


def _reopen_partial(tmp: Path, shape: tuple[int, int, int], done: int, per: int,
                    out: Path) -> tuple[np.memmap, int]:  # fmt: skip
    """The partial maps file of an interrupted run, opened for writing, and the cosmologies
    whose maps it really holds: a file cut short (a full disk, a copy interrupted) is
    extended and the cosmologies it lost are simulated again, as are any whose maps are not
    finite densities (zeros where a write never landed). Never resumes on top of zeros."""
    fmt = np.lib.format
    try:
        with open(tmp, "rb") as f:
            version = fmt.read_magic(f)
            read_header = (fmt.read_array_header_1_0 if version == (1, 0)
                           else fmt.read_array_header_2_0)  # fmt: skip
            file_shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (ValueError, OSError, EOFError) as exc:
        raise DataFileError(f"cannot resume from {tmp}: {exc}; delete it and {_PROGRESS} "
                            "to start again") from exc  # fmt: skip
    if tuple(file_shape) != shape or dtype != np.float32 or fortran:
        raise DataFileError(f"{tmp} does not match this data set (shape {tuple(file_shape)}, "
                            f"{dtype}); delete it and {_PROGRESS} to start again")  # fmt: skip
    map_bytes = shape[1] * shape[2] * 4
    full = offset + shape[0] * map_bytes
    size = tmp.stat().st_size
    if size < full:
        kept = max(0, size - offset) // map_bytes // per
        if kept < done:
            print(f"{tmp} is cut short ({size} of {full} bytes): simulating again from "
                  f"cosmology {kept} (it recorded {done} done)", file=sys.stderr)  # fmt: skip
            done = kept
        os.truncate(tmp, full)
    arr = fmt.open_memmap(tmp, mode="r+")
    for c in range(done):  # every map of a finished cosmology must be a density
        block = arr[c * per : (c + 1) * per]
        if not (np.isfinite(block).all() and (block.reshape(per, -1).max(axis=1) > 0).all()):
            print(f"{tmp}: the maps of cosmology {c} are not finite densities: simulating "
                  f"again from there (it recorded {done} done)", file=sys.stderr)  # fmt: skip
            done = c
            break
    return arr, done


def write_synthetic_dataset(
    out_dir: str | os.PathLike,
    *,
    simulator: str = "lognormal",
    n_cosmologies: int = 1000,
    maps_per_cosmology: int = MAPS_PER_COSMOLOGY,
    config: object | None = None,
    seed: int = 0,
    field: str = "Mtot",
    set_name: str = "LH",
    chunk: int | None = None,
    progress: bool = True,
) -> Path:
    """Simulate a Latin-hypercube data set and write it in the CMD layout.

    Writes ``Maps_{field}_{suite}_{set}_z=0.00.npy`` (float32 densities with mean 1),
    ``params_{set}_{suite}.txt`` (six CMD columns; the four astrophysical ones are 1,
    the fiducial values) and ``dataset.json`` (simulator, configuration and seed), with
    suite ``Lognormal`` or ``Nbody``. Files appear under their final names only when
    complete. An interrupted run resumes where it stopped when called again with the same
    arguments (the maps are the same as those of an uninterrupted run); a finished data set
    is not simulated again; a directory that holds another data set is refused.

    Parameters
    ----------
    out_dir
        Directory to write into (created if needed).
    simulator
        ``"lognormal"`` (the default: log-normal maps with an exact likelihood) or
        ``"nbody"`` (particle-mesh N-body maps, :mod:`diffinfer.simulators.nbody`).
    n_cosmologies, maps_per_cosmology
        Size of the data set (CMD: 1,000 x 15). N-body maps come from one box per
        cosmology, so ``maps_per_cosmology`` is at most 3 x its ``n_slabs``.
    config
        :class:`~diffinfer.fields.FieldConfig` (log-normal) or
        :class:`~diffinfer.simulators.nbody.NBodyConfig` (N-body); default the simulator's.
    seed
        Seeds both the hypercube and the maps; the same seed gives the same files.
    field, set_name
        CMD name components.
    chunk
        Cosmologies simulated between two progress records (default 50 log-normal, 1
        N-body).
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
    if chunk is not None:
        check_int("chunk", chunk, low=1)
    for name, value in (("field", field), ("set_name", set_name)):
        if not (isinstance(value, str) and value.replace("-", "").isalnum()):
            raise InputError(f"{name} must be letters and digits (a CMD file-name part), "
                             f"got {value!r}")  # fmt: skip
    sim = make_simulator(simulator, config)
    if simulator == "nbody" and maps_per_cosmology > sim.maps_per_box:
        raise InputError(
            f"maps_per_cosmology {maps_per_cosmology} exceeds the {sim.maps_per_box} maps of "
            f"one N-body box (3 axes x {sim.config.n_slabs} slabs): raise n_slabs or ask for "
            "fewer maps"
        )
    chunk = chunk or (1 if simulator == "nbody" else 50)
    meta = _description(sim, n_cosmologies, maps_per_cosmology, seed, field, set_name)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataFileError(f"{out} exists and is not a directory; choose another output path")
    out.mkdir(parents=True, exist_ok=True)
    maps_path = out / maps_filename(field, meta["suite"], set_name)
    with directory_lock(out, "simulate"):  # a second writer is refused, not interleaved
        return _simulate_into(out, sim, meta, maps_path, n_cosmologies, maps_per_cosmology,
                              seed, set_name, chunk, progress, simulator)  # fmt: skip


def _simulate_into(out: Path, sim, meta: dict, maps_path: Path, n_cosmologies: int,
                   maps_per_cosmology: int, seed: int, set_name: str, chunk: int,
                   progress: bool, simulator: str) -> Path:  # fmt: skip
    """The body of :func:`write_synthetic_dataset`, under its directory lock."""
    state = _claim(out, meta, maps_path.name)
    if state == "done":
        if progress:
            print(f"{out} already holds this data set; nothing to do")
        return maps_path
    # rounded to the precision of the parameter file, so that the file is exact for the maps
    theta = np.round(latin_hypercube(n_cosmologies, sim.config.prior, seed), 6)
    n = sim.config.n_pix
    tmp = maps_path.with_name(maps_path.name + ".partial")
    shape = (n_cosmologies * maps_per_cosmology, n, n)
    done = 0
    if state == "resume":
        done = int(read_json(out / _PROGRESS, what="progress record").get("done", 0))
        if not 0 <= done <= n_cosmologies:
            raise DataFileError(f"{out / _PROGRESS} records {done} cosmologies done, not "
                                f"0-{n_cosmologies}; delete it and {tmp.name} to start "
                                "again")  # fmt: skip
        arr, done = _reopen_partial(tmp, shape, done, maps_per_cosmology, out)
    else:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        write_json_atomic(out / _PROGRESS, {**meta, "done": 0})
    with tqdm(total=n_cosmologies, initial=done, desc=f"simulating ({meta['simulator']})",
              unit="cosmo", disable=not progress) as bar:  # fmt: skip
        for i in range(done, n_cosmologies, chunk):
            rows = theta[i : i + chunk]
            maps = sim.simulate(rows, maps_per_cosmology, seed, row_offset=i)
            arr[i * maps_per_cosmology : (i + len(rows)) * maps_per_cosmology] = maps.reshape(
                -1, n, n
            )
            arr.flush()
            write_json_atomic(out / _PROGRESS, {**meta, "done": i + len(rows)})
            bar.update(len(rows))
    del arr
    params = np.ones((n_cosmologies, len(PARAM_COLUMNS)))
    params[:, :2] = theta
    params_path = out / params_filenames(meta["suite"], set_name)[0]
    tmp_params = params_path.with_name(params_path.name + ".partial")
    with open(tmp_params, "w") as fh:
        np.savetxt(fh, params, fmt="%.6f", header=" ".join(PARAM_COLUMNS))
    os.replace(tmp_params, params_path)
    os.replace(tmp, maps_path)
    if simulator == "nbody":
        meta["versions"] = sim.description()["versions"]
    write_json_atomic(out / "dataset.json", meta)
    (out / _PROGRESS).unlink(missing_ok=True)
    return maps_path
