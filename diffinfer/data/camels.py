"""Loader for CAMELS Multifield Dataset 2D maps and their parameter files.

CMD stores the maps of one field, suite and set in ``Maps_{field}_{suite}_{set}_z=0.00.npy``
(shape (n_maps, N, N), float32) and the parameters in ``params_{set}_{suite}.txt`` (older
releases: ``params_{suite}.txt``), one row per cosmology with six columns
Omega_m, sigma_8, A_SN1, A_AGN1, A_SN2, A_AGN2. Map i belongs to cosmology i // 15.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffinfer.errors import DataFileError, InputError

MAPS_PER_COSMOLOGY = 15
PARAM_COLUMNS = ("Omega_m", "sigma_8", "A_SN1", "A_AGN1", "A_SN2", "A_AGN2")
SPLITS = ("train", "validation", "test")


def maps_filename(field: str, suite: str, set_name: str, redshift: str = "0.00") -> str:
    """CMD name of a maps file, e.g. ``Maps_Mtot_IllustrisTNG_LH_z=0.00.npy``."""
    return f"Maps_{field}_{suite}_{set_name}_z={redshift}.npy"


def params_filenames(suite: str, set_name: str) -> tuple[str, str]:
    """CMD names of a parameter file: the current one first, then the older one."""
    return f"params_{set_name}_{suite}.txt", f"params_{suite}.txt"


def block_downsample(maps: np.ndarray, n_out: int) -> np.ndarray:
    """Average non-overlapping pixel blocks so that (..., N, N) becomes (..., n_out, n_out).

    Block averaging conserves the mean density (mass) of every block.
    """
    n = maps.shape[-1]
    if n_out == n:
        return np.asarray(maps)
    if n_out <= 0 or n % n_out:
        raise InputError(
            f"cannot downsample {n} x {n} maps to {n_out} x {n_out}: {n} % {n_out} != 0"
        )
    f = n // n_out
    shape = (*maps.shape[:-2], n_out, f, n_out, f)
    return np.asarray(maps).reshape(shape).mean(axis=(-3, -1))


def dihedral(maps: np.ndarray, k: int) -> np.ndarray:
    """Element k (0..7) of the dihedral group D4 applied to the last two axes.

    k % 4 quarter-turns, then a mirror of the last axis when k >= 4.
    k = 0 is the identity. These are the 8 symmetries of a square periodic map.
    """
    if int(k) != k or not 0 <= k < 8:
        raise InputError(f"dihedral index must be an integer in 0..7, got {k}")
    out = np.rot90(maps, k=k % 4, axes=(-2, -1))
    if k >= 4:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


@dataclass
class CamelsMaps:
    """Maps of one field, suite and set, memory-mapped, with their parameters.

    Use :meth:`open` to read a directory in the CMD layout.

    Attributes
    ----------
    maps
        Read-only memory map, shape (n_maps, N, N).
    params
        Parameter table, shape (n_cosmologies, n_columns); the first two columns are
        Omega_m and sigma_8.
    maps_per_cosmology
        Maps per parameter row (15 in CMD).
    """

    maps: np.ndarray
    params: np.ndarray
    maps_per_cosmology: int = MAPS_PER_COSMOLOGY
    source: Path | None = None
    """The maps file, where the maps were read from one (errors name it)."""

    @classmethod
    def open(
        cls,
        root: str | os.PathLike,
        *,
        field: str = "Mtot",
        suite: str = "IllustrisTNG",
        set_name: str = "LH",
        maps_per_cosmology: int = MAPS_PER_COSMOLOGY,
    ) -> CamelsMaps:
        """Open ``Maps_{field}_{suite}_{set}_z=0.00.npy`` and its parameter file in ``root``.

        Raises
        ------
        DataFileError
            A file is missing, truncated or not an array of maps, or the number of maps
            is not ``maps_per_cosmology`` times the number of parameter rows.
        """
        root = Path(root)
        maps_path = root / maps_filename(field, suite, set_name)
        if not maps_path.is_file():
            raise DataFileError(
                f"maps file not found: {maps_path} (expected CMD name "
                f"{maps_filename(field, suite, set_name)}; check field, suite and set)"
            )
        try:
            maps = np.load(maps_path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataFileError(
                f"cannot read {maps_path}: {exc}. The file is truncated or corrupted; "
                "download or regenerate it"
            ) from exc
        names = params_filenames(suite, set_name)
        params_path = next((root / n for n in names if (root / n).is_file()), None)
        if params_path is None:
            raise DataFileError(
                f"parameter file not found in {root}: expected {' or '.join(names)}"
            )
        try:
            params = np.loadtxt(params_path, ndmin=2)
        except ValueError as exc:
            raise DataFileError(f"cannot parse {params_path}: {exc}") from exc
        try:
            return cls(maps=maps, params=params, maps_per_cosmology=maps_per_cosmology,
                       source=maps_path)  # fmt: skip
        except DataFileError as exc:
            raise DataFileError(f"{root}: {exc}") from exc

    def __post_init__(self) -> None:
        if self.maps.ndim != 3 or self.maps.shape[1] != self.maps.shape[2]:
            raise DataFileError(f"maps must have shape (n_maps, N, N); got {self.maps.shape}")
        if not np.issubdtype(self.maps.dtype, np.floating):
            raise DataFileError(f"maps must be floating point; got dtype {self.maps.dtype}")
        if self.params.ndim != 2 or self.params.shape[1] < 2:
            raise DataFileError(
                f"parameter table must have one row per cosmology and at least the columns "
                f"Omega_m, sigma_8; got shape {self.params.shape}"
            )
        if not np.all(np.isfinite(self.params[:, :2])):
            raise DataFileError("parameter table contains NaN or inf in Omega_m or sigma_8")
        om, s8 = self.params[:, 0], self.params[:, 1]
        bad = np.nonzero(~((om > 0) & (om <= 1) & (s8 > 0) & (s8 < 3)))[0]
        if bad.size:
            r = int(bad[0])
            raise DataFileError(
                f"parameter row {r} holds Omega_m = {om[r]:g}, sigma_8 = {s8[r]:g}, outside "
                f"any cosmology (0 < Omega_m <= 1, 0 < sigma_8 < 3; {bad.size} such rows): "
                "are the columns in CMD order (Omega_m, sigma_8, ...)?"
            )
        expected = self.params.shape[0] * self.maps_per_cosmology
        if self.maps.shape[0] != expected:
            raise DataFileError(
                f"{self.maps.shape[0]} maps but {self.params.shape[0]} parameter rows x "
                f"{self.maps_per_cosmology} maps per cosmology = {expected}; the maps and "
                "parameter files do not belong together"
            )

    @property
    def n_maps(self) -> int:
        """Number of maps."""
        return self.maps.shape[0]

    @property
    def n_cosmologies(self) -> int:
        """Number of parameter rows."""
        return self.params.shape[0]

    @property
    def n_pix(self) -> int:
        """Pixels per side."""
        return self.maps.shape[-1]

    def cosmology_of(self, map_index: np.ndarray | int) -> np.ndarray | int:
        """Parameter row of map(s) ``map_index``: i // maps_per_cosmology."""
        return np.asarray(map_index) // self.maps_per_cosmology

    def theta(self, map_index: np.ndarray | int) -> np.ndarray:
        """(Omega_m, sigma_8) of map(s) ``map_index``, shape (..., 2)."""
        return self.params[self.cosmology_of(map_index), :2]

    def split_cosmologies(
        self,
        split: str,
        fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        seed: int = 0,
    ) -> np.ndarray:
        """Cosmology indices of a train / validation / test split (a seeded permutation).

        The three splits are disjoint and cover every cosmology.
        """
        if split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS}, got {split!r}")
        if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
            raise InputError(
                f"split fractions must be three non-negative numbers summing to 1: {fractions}"
            )
        perm = np.random.default_rng(seed).permutation(self.n_cosmologies)
        n_train = round(fractions[0] * self.n_cosmologies)
        n_val = round(fractions[1] * self.n_cosmologies)
        bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_val)}
        lo, hi = bounds.get(split, (n_train + n_val, self.n_cosmologies))
        return np.sort(perm[lo:hi])

    def split_maps(
        self,
        split: str,
        fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        seed: int = 0,
    ) -> np.ndarray:
        """Map indices of a split: all maps of the split's cosmologies (never split by map)."""
        cosmo = self.split_cosmologies(split, fractions, seed)
        per = self.maps_per_cosmology
        return (cosmo[:, None] * per + np.arange(per)[None, :]).ravel()

    def load(
        self,
        indices: np.ndarray | slice,
        *,
        n_pix: int | None = None,
        augment: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read maps into memory, optionally downsampled and transformed.

        Parameters
        ----------
        indices
            Map indices (or a slice).
        n_pix
            Downsample to n_pix x n_pix by block averaging (CMD's 256^2 to 64^2 averages
            4 x 4 blocks); default keep the stored size.
        augment
            Dihedral element 0..7 applied to every map (0: none).

        Returns
        -------
        maps, theta
            float64 maps (M, n, n) and their (Omega_m, sigma_8), (M, 2).
        """
        idx = np.arange(self.n_maps)[indices] if isinstance(indices, slice) else np.asarray(indices)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_maps):
            raise InputError(
                f"map indices must lie in [0, {self.n_maps}); got {idx.min()}..{idx.max()}"
            )
        maps = np.asarray(self.maps[idx], dtype=np.float64)
        finite = np.isfinite(maps.reshape(len(maps), -1)).all(axis=1)
        if not finite.all():
            first = int(idx[np.argmin(finite)])
            raise DataFileError(
                f"map {first} of {self.source or 'the data set'} (cosmology "
                f"{first // self.maps_per_cosmology}) holds NaN or inf values "
                f"({int((~finite).sum())} of the {len(maps)} maps read): regenerate the "
                "data set, or leave those cosmologies out"
            )
        if n_pix is not None:
            maps = block_downsample(maps, n_pix)
        if augment:
            maps = dihedral(maps, augment)
        return maps, self.theta(idx)
