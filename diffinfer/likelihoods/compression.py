"""The diffusion likelihood as a compressor: summaries of a map for neural posterior estimation.

Where a diffusion likelihood cannot be calibrated as it stands (the N-body model, docs/nbody.md),
its information can still be kept: each map is compressed to the diffusion likelihood's
located maximum and the Gauss-Newton (Fisher) covariance about it
(:meth:`~diffinfer.likelihoods.locate.GaussNewtonLocator.locate`, untempered), and a
neural posterior estimator is trained on those summaries of simulated maps
(:mod:`diffinfer.likelihoods.npe`, summaries ``"diffusion"`` and ``"power+diffusion"``). The
flow learns how the compressed statistics scatter about the truth, whatever the network's
errors, so its posterior is calibrated by construction on maps like its training maps, and it
is as informative as the compression allows.

The summary of a map, in the unit coordinates u = (theta - low) / width of the prior box:
``[u_1, u_2, log sd_1, log sd_2, atanh(corr), failed]``. ``failed`` is 1 where the locator
raised :class:`~diffinfer.errors.LocateError` (the others are then those of the box's centre
with unit widths), 0 otherwise.
"""

from __future__ import annotations

import numpy as np
import torch

from diffinfer.errors import DataFileError, InputError, LocateError
from diffinfer.fields.grid import as_maps

N_COMPRESSED = 6
"""Entries of one map's compressed summary."""
COMPRESSOR_TERMS = "vlb"
"""The term set whose likelihood compresses (the default likelihood's)."""
FAILED = np.array([0.5, 0.5, 0.0, 0.0, 0.0, 1.0], np.float32)
"""The summary of a map whose likelihood could not be located."""


def compress(density: np.ndarray | torch.Tensor, model, *, seed: int = 0,
             n_timesteps: int | None = None, progress: bool = False) -> np.ndarray:  # fmt: skip
    """The compressed summaries of density maps (N, N) or (M, N, N) under a diffusion model.

    Parameters
    ----------
    density
        Density maps (rho / mean, positive), of the model's resolution.
    model
        A :class:`~diffinfer.diffusion.DiffusionModel`.
    seed
        The likelihood's seed (its timesteps and noise draws; the same for every map, as a
        user's default posterior).
    n_timesteps
        The likelihood's timesteps (default: the default likelihood's, which
        :func:`compressor_card` records).
    progress
        Show a progress bar over the maps.

    Returns
    -------
    numpy.ndarray
        (M, :data:`N_COMPRESSED`) float32 (module docstring).
    """
    from diffinfer.likelihoods.diffusion import DiffusionLikelihood

    rho = as_maps(density, n_pix=model.field.n_pix, positive=True, what="density map")
    if rho.ndim == 2:
        rho = rho[None]
    box = model.field.prior
    low, width = np.asarray(box.low, float), np.asarray(box.width, float)
    out = np.repeat(FAILED[None], len(rho), axis=0)
    maps = range(len(rho))
    if progress and len(rho) > 1:
        from tqdm.auto import tqdm

        maps = tqdm(maps, desc="compressing", unit="map")
    for i in maps:
        like = DiffusionLikelihood(model, rho[i], terms=COMPRESSOR_TERMS, seed=seed,
                                   n_timesteps=n_timesteps or "auto", progress=False)  # fmt: skip
        try:
            loc = like.locate()
        except LocateError:
            continue
        cov = loc.cov / np.outer(width, width)
        sd = np.sqrt(np.diag(cov))
        corr = np.clip(cov[0, 1] / (sd[0] * sd[1]), -0.999, 0.999)
        u = (loc.theta - low) / width
        out[i] = [u[0], u[1], np.log(sd[0]), np.log(sd[1]), np.arctanh(corr), 0.0]
    return out


def compressor_card(model, seed: int = 0) -> dict:
    """The card entry that names the compressor: the model (name and weights' sha256), the
    term set, the likelihood's timesteps (the default's) and its seed."""
    from diffinfer.likelihoods.terms import default_timesteps

    card = model.card or {}
    name = card.get("name")
    if not name:
        raise InputError("the compressing diffusion model has no name in its card; load "
                         "it by name or directory (diffinfer.diffusion.checkpoint."
                         "load_model)")  # fmt: skip
    return {"model": name, "weights_sha256": (card.get("weights") or {}).get("sha256"),
            "terms": COMPRESSOR_TERMS,
            "n_timesteps": default_timesteps(model, COMPRESSOR_TERMS, None),
            "seed": int(seed)}  # fmt: skip


_MODELS: dict = {}
"""The compressing models loaded in this process, by name."""


def compressor_model(entry: dict):
    """The diffusion model a card's compressor entry names, loaded once per process; a
    model whose weights differ from the recorded ones is refused."""
    from diffinfer.diffusion.checkpoint import load_model

    if entry["model"] not in _MODELS:
        _MODELS[entry["model"]] = load_model(entry["model"])
    model = _MODELS[entry["model"]]
    have = ((model.card or {}).get("weights") or {}).get("sha256")
    if entry.get("weights_sha256") and have != entry["weights_sha256"]:
        raise DataFileError(
            f"the NPE reference was trained on summaries of {entry['model']} with weights "
            f"{str(entry['weights_sha256'])[:16]}..., but {entry['model']} now has "
            f"{str(have)[:16]}...: retrain the reference on the present model's summaries"
        )
    return model
