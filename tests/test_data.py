"""CAMELS-format loader, splits, augmentations and the synthetic writer."""

from __future__ import annotations

import numpy as np
import pytest

from diffinfer.data import (
    CamelsMaps,
    block_downsample,
    dihedral,
    latin_hypercube,
    maps_filename,
    write_synthetic_dataset,
)
from diffinfer.errors import DataFileError, InputError
from diffinfer.fields import FieldConfig


def _write_cmd(root, n_cosmo=4, n_pix=16, params_name="params_LH_IllustrisTNG.txt", per=15):
    rng = np.random.default_rng(0)
    maps = rng.lognormal(size=(n_cosmo * per, n_pix, n_pix)).astype(np.float32)
    np.save(root / maps_filename("Mtot", "IllustrisTNG", "LH"), maps)
    params = np.column_stack([rng.uniform(0.1, 0.5, n_cosmo), rng.uniform(0.6, 1.0, n_cosmo)])
    params = np.column_stack([params, np.ones((n_cosmo, 4))])
    np.savetxt(root / params_name, params)
    return maps, params


@pytest.mark.parametrize("params_name", ["params_LH_IllustrisTNG.txt", "params_IllustrisTNG.txt"])
def test_loader_reads_both_parameter_file_names(tmp_path, params_name):
    maps, params = _write_cmd(tmp_path, params_name=params_name)
    data = CamelsMaps.open(tmp_path)
    assert isinstance(data.maps, np.memmap)
    assert (data.n_maps, data.n_cosmologies, data.n_pix) == (60, 4, 16)
    x, theta = data.load([0, 14, 15, 59])
    assert np.array_equal(x, maps[[0, 14, 15, 59]].astype(np.float64))
    assert np.array_equal(theta, params[[0, 0, 1, 3], :2])


def test_splits_are_by_cosmology_disjoint_and_complete(tmp_path):
    _write_cmd(tmp_path, n_cosmo=20)
    data = CamelsMaps.open(tmp_path)
    parts = {s: data.split_cosmologies(s) for s in ("train", "validation", "test")}
    assert [len(p) for p in parts.values()] == [14, 3, 3]
    assert np.array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(20))
    maps = {s: data.split_maps(s) for s in parts}
    for s, idx in maps.items():
        assert set(data.cosmology_of(idx)) == set(parts[s])  # whole cosmologies only
        assert len(idx) == 15 * len(parts[s])
    assert not np.array_equal(data.split_cosmologies("test", seed=1), parts["test"])
    with pytest.raises(InputError, match="split"):
        data.split_maps("holdout")


def test_downsampling_averages_blocks_and_keeps_the_mean(tmp_path):
    _write_cmd(tmp_path, n_pix=16)
    data = CamelsMaps.open(tmp_path)
    x16, _ = data.load(slice(0, 3))
    x4, _ = data.load(slice(0, 3), n_pix=4)
    assert x4.shape == (3, 4, 4)
    assert np.allclose(x4.mean(axis=(-2, -1)), x16.mean(axis=(-2, -1)))
    assert x4[0, 0, 0] == pytest.approx(x16[0, :4, :4].mean())
    with pytest.raises(InputError, match="cannot downsample"):
        block_downsample(x16, 5)


def test_dihedral_group():
    x = np.arange(16.0).reshape(4, 4)
    images = [dihedral(x, k) for k in range(8)]
    assert np.array_equal(images[0], x)
    # 8 distinct elements, each a permutation of the pixels
    assert len({im.tobytes() for im in images}) == 8
    assert all(np.array_equal(np.sort(im.ravel()), x.ravel()) for im in images)
    # closure: applying any element to any image gives one of the 8 images
    keys = {im.tobytes() for im in images}
    assert all(dihedral(im, k).tobytes() in keys for im in images for k in range(8))
    with pytest.raises(InputError):
        dihedral(x, 8)


def test_missing_truncated_and_mismatched_files(tmp_path):
    with pytest.raises(DataFileError, match="maps file not found"):
        CamelsMaps.open(tmp_path)
    maps, params = _write_cmd(tmp_path)
    (tmp_path / "params_LH_IllustrisTNG.txt").unlink()
    with pytest.raises(DataFileError, match="parameter file not found"):
        CamelsMaps.open(tmp_path)
    np.savetxt(tmp_path / "params_LH_IllustrisTNG.txt", params[:3])
    with pytest.raises(DataFileError, match="do not belong together"):
        CamelsMaps.open(tmp_path)
    np.savetxt(tmp_path / "params_LH_IllustrisTNG.txt", params)
    path = tmp_path / maps_filename("Mtot", "IllustrisTNG", "LH")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataFileError, match="truncated"):
        CamelsMaps.open(tmp_path)
    np.save(path, maps[0])
    with pytest.raises(DataFileError, match=r"shape \(n_maps, N, N\)"):
        CamelsMaps.open(tmp_path)


def test_synthetic_writer_is_deterministic_and_loadable(tmp_path):
    cfg = FieldConfig(n_pix=16, box_size=125.0, depth=50.0)
    a = write_synthetic_dataset(tmp_path / "a", n_cosmologies=6, config=cfg, seed=3, progress=False)
    b = write_synthetic_dataset(
        tmp_path / "b", n_cosmologies=6, config=cfg, seed=3, chunk=4, progress=False
    )
    # the same seed gives the same files; another chunking of the cosmologies changes the
    # spectra by rounding only (docs/simulator.md), i.e. float32 maps within one ulp or so
    again = write_synthetic_dataset(tmp_path / "c", n_cosmologies=6, config=cfg, seed=3,
                                    progress=False)  # fmt: skip
    assert a.read_bytes() == again.read_bytes()
    np.testing.assert_allclose(np.load(a), np.load(b), rtol=1e-6)
    data = CamelsMaps.open(tmp_path / "a", suite="Lognormal")
    assert (data.n_maps, data.n_pix) == (90, 16) and data.maps.dtype == np.float32
    assert np.all(data.params[:, 2:] == 1.0)
    assert cfg.prior.contains(data.params[:, :2]).all()
    assert not list((tmp_path / "a").glob("*.partial"))


def test_latin_hypercube_stratifies_each_parameter():
    theta = latin_hypercube(50, seed=0)
    for j, (lo, hi) in enumerate([(0.1, 0.5), (0.6, 1.0)]):
        strata = np.floor((theta[:, j] - lo) / (hi - lo) * 50).astype(int)
        assert np.array_equal(np.sort(strata), np.arange(50))
