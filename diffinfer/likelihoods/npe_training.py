"""Training of the NPE references (:func:`train_npe`): maximum likelihood with early stopping
on held-out cosmologies, dihedral augmentation of the CNN input, and a checkpointed state
that an interrupted run resumes from."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffinfer.errors import DataFileError, InputError
from diffinfer.fields.grid import FieldConfig, as_maps
from diffinfer.fields.stats import power_spectrum
from diffinfer.fields.transform import Transform
from diffinfer.io import optimizer_state, optimizer_tensors, read_state, write_state_atomic
from diffinfer.likelihoods.npe import CARD_FORMAT, NPEReference
from diffinfer.likelihoods.npe_summaries import SUMMARIES, build_estimator, summarise
from diffinfer.parameters import as_theta


def train_npe(
    density: np.ndarray,
    theta: np.ndarray,
    field: FieldConfig,
    *,
    summary: str = "power+cnn",
    flow: str = "nsf",
    hidden_features: int = 64,
    num_transforms: int = 5,
    channels: tuple[int, ...] = (8, 16, 32),
    n_features: int = 16,
    n_bins: int = 12,
    batch_size: int = 256,
    learning_rate: float = 5e-4,
    max_epochs: int = 200,
    stop_after_epochs: int = 20,
    validation_fraction: float = 0.1,
    augment: bool = True,
    seed: int = 0,
    data: dict | None = None,
    compressor: object = None,
    compressed: np.ndarray | None = None,
    compressor_seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> NPEReference:
    """Train an NPE reference on labelled maps.

    The flow is fitted by maximum likelihood (Adam, gradient norm clipped at 5, as sbi's
    trainer) with early stopping on a validation set of whole cosmologies: the maps of one
    cosmology (slabs of one simulated box, which share their θ) are never split between
    training and validation, so the validation loss measures generalisation to new boxes
    rather than to other slabs of boxes already seen.

    Parameters
    ----------
    density, theta
        Training maps (M, N, N) (density rho / mean, positive) and their parameters (M, 2).
        Maps with the same θ are taken to come from one box.
    field
        Geometry and prior box of the maps.
    summary
        ``"power+cnn"``, ``"power"`` or ``"power+diffusion"``
        (:mod:`~diffinfer.likelihoods.npe_summaries`).
    flow, hidden_features, num_transforms
        The sbi flow (``"nsf"``, ``"maf"``, ...) and its size.
    channels, n_features
        The CNN embedding's stages and output features (``"power+cnn"`` only).
    n_bins
        Requested power-spectrum bins (:func:`~diffinfer.likelihoods.spectrum.spectrum_bins`).
    batch_size, learning_rate, max_epochs, stop_after_epochs
        Training settings: stop after ``stop_after_epochs`` epochs without a lower
        validation loss, and keep the best epoch's weights.
    validation_fraction
        Fraction of the cosmologies (boxes) held out for early stopping.
    augment
        Apply a random symmetry of the periodic square (one of the 8 rotations and
        reflections) to each training map's CNN input; the binned power spectrum is
        invariant under them.
    seed
        Seeds the network initialisation, the validation split, the batches and the
        augmentation.
    data
        Description of the training data, recorded in the card.
    compressor, compressed, compressor_seed
        For ``"power+diffusion"``: the compressing diffusion model (a
        :class:`~diffinfer.diffusion.DiffusionModel`, a name or a directory), the maps'
        compression under it if it was computed already (M, 6), and the likelihood seed it
        was (or is to be) computed with
        (:func:`~diffinfer.likelihoods.compression.compress`). Use maps the model was not
        trained on: its compression of its own training maps is tighter than of new maps.
    checkpoint
        A file for the training state, written every 5 minutes: an interrupted run given
        the same file and settings continues from it (delete it once the reference is
        saved). A state written with other settings is refused.
    log
        Called with a line per epoch (validation loss).

    Returns
    -------
    NPEReference
        The trained reference (save it with :meth:`NPEReference.save`).
    """
    from diffinfer.likelihoods.spectrum import spectrum_bins
    from diffinfer.validation import check_choice, check_float, check_int

    check_choice("summary", summary, SUMMARIES)
    check_int("max_epochs", max_epochs, low=1)
    check_int("batch_size", batch_size, low=1)
    check_float("validation_fraction", validation_fraction, low=0, high=1, low_open=True,
                high_open=True)  # fmt: skip
    rho = as_maps(density, n_pix=field.n_pix, positive=True, what="training map")
    theta_t = as_theta(theta, prior=field.prior)
    if len(theta_t) != len(rho):
        raise InputError(f"{len(rho)} maps but {len(theta_t)} parameter vectors")
    edges = spectrum_bins(field.n_pix, field.box_size, n_bins)
    delta = rho / rho.mean(dim=(-2, -1), keepdim=True) - 1.0
    logp = np.log(power_spectrum(delta, field.box_size, edges=edges).power)
    card = {
        "format": CARD_FORMAT,
        "kind": "npe",
        "summary": summary,
        "field": field.to_dict(),
        "edges": edges.tolist(),
        "power_mean": logp.mean(0).tolist(),
        "power_std": logp.std(0).tolist(),
        "transform": Transform.fit(rho.numpy()).to_dict(),
        "architecture": {
            "flow": flow,
            "hidden_features": hidden_features,
            "num_transforms": num_transforms,
            "channels": list(channels),
            "n_features": n_features,
        },
        "data": data or {},
    }
    if summary == "power+diffusion":
        compressed = _compress_for_training(card, rho, compressor, compressed, compressor_seed)
    elif compressor is not None or compressed is not None:
        raise InputError(f"compressor and compressed belong to the 'power+diffusion' summary, "
                         f"not {summary!r}")  # fmt: skip
    torch.manual_seed(seed)
    x = summarise(rho, card, compressed)
    estimator = build_estimator(card)
    groups = np.unique(theta_t.numpy(), axis=0, return_inverse=True)[1].reshape(-1)
    history = _fit(estimator, theta_t.to(torch.float32), x, groups,
                   n_bins=len(edges) - 1, n_pix=field.n_pix,
                   augment=augment and summary == "power+cnn", batch_size=batch_size,
                   learning_rate=learning_rate, max_epochs=max_epochs,
                   stop_after_epochs=stop_after_epochs,
                   validation_fraction=validation_fraction, seed=seed,
                   checkpoint=None if checkpoint is None else Path(checkpoint),
                   log=log)  # fmt: skip
    card["training"] = {
        "n_maps": len(rho),
        "n_cosmologies": int(groups.max()) + 1,
        "seed": seed,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "max_epochs": max_epochs,
        "stop_after_epochs": stop_after_epochs,
        "validation": {
            "fraction": validation_fraction,
            "by": "cosmology",
            "n_cosmologies": history["n_validation_cosmologies"],
        },
        "augment": "dihedral" if augment and summary == "power+cnn" else "none",
        "epochs": history["epochs"],
        "best_epoch": history["best_epoch"],
        "best_validation_loss": history["best_validation_loss"],
        # over every run, when resumed; None where an earlier run did not keep its time
        "seconds": None if math.isnan(history["seconds"]) else round(history["seconds"], 1),
        "trainer": "diffinfer",
        "sbi_version": _version("sbi"),
        "torch_version": torch.__version__,
    }
    estimator.eval()
    return NPEReference(card=card, estimator=estimator)


def _compress_for_training(card: dict, rho: torch.Tensor, compressor: object,
                           compressed: np.ndarray | None, seed: int) -> np.ndarray:  # fmt: skip
    """The training maps' compression (given, or computed here), with the compressor and the
    standardisation constants written into ``card``."""
    from diffinfer.diffusion.model import DiffusionModel
    from diffinfer.likelihoods.compression import compress, compressor_card

    if compressor is None:
        raise InputError("the 'power+diffusion' summary needs compressor= (the diffusion "
                         "model whose likelihood compresses the maps, e.g. 'nbody64')")  # fmt: skip
    if not isinstance(compressor, DiffusionModel):
        from diffinfer.diffusion.checkpoint import load_model

        compressor = load_model(compressor)
    if compressor.field.n_pix != int(card["field"]["n_pix"]):
        raise InputError(f"the compressor {compressor.card.get('name')} describes "
                         f"{compressor.field.n_pix}^2 maps; the training maps are "
                         f"{card['field']['n_pix']}^2")  # fmt: skip
    card["compressor"] = compressor_card(compressor, seed)
    if compressed is None:
        compressed = compress(rho, compressor, seed=seed, progress=True)
    compressed = np.asarray(compressed, np.float32)
    if not np.all(np.isfinite(compressed)):
        raise InputError("compressed summaries hold NaN or inf: recompute them")
    std = compressed.std(0)
    card["compressed_mean"] = compressed.mean(0).tolist()
    card["compressed_std"] = np.where(std > 0, std, 1.0).tolist()
    return compressed


def _dihedral(x: torch.Tensor, n_bins: int, n_pix: int, gen: torch.Generator) -> torch.Tensor:
    """Summaries with a random symmetry of the periodic square applied to each map part."""
    maps = x[:, n_bins:].reshape(-1, n_pix, n_pix)
    k = torch.randint(0, 8, (len(x),), generator=gen)
    out = maps.clone()
    for g in range(1, 8):
        sel = k == g
        if bool(sel.any()):
            m = maps[sel].transpose(-2, -1) if g >= 4 else maps[sel]
            out[sel] = torch.rot90(m, g % 4, dims=(-2, -1))
    return torch.cat([x[:, :n_bins], out.reshape(len(x), -1)], dim=1)


def _fit(estimator: nn.Module, theta: torch.Tensor, x: torch.Tensor, groups: np.ndarray, *,
         n_bins: int, n_pix: int, augment: bool, batch_size: int, learning_rate: float,
         max_epochs: int, stop_after_epochs: int, validation_fraction: float,
         seed: int, checkpoint: Path | None = None, every_minutes: float = 5.0,
         log: Callable[[str], None] | None = None) -> dict:  # fmt: skip
    """Maximum-likelihood training with early stopping on held-out cosmologies; the best
    epoch's weights are loaded into ``estimator``. Returns the training history.

    With ``checkpoint``, the state after an epoch (weights, best weights, optimizer,
    batch generator, history) is written there atomically every ``every_minutes`` and at
    the end, and a run started again with the same settings continues from it (with a
    larger ``max_epochs``, a finished run trains on)."""
    rng = np.random.default_rng(seed)
    n_groups = int(groups.max()) + 1
    n_val = max(1, round(validation_fraction * n_groups))
    if n_val >= n_groups:
        raise InputError(f"{n_groups} cosmologies are too few to hold out "
                         f"{validation_fraction:.0%} of them for early stopping")  # fmt: skip
    held = np.isin(groups, rng.choice(n_groups, n_val, replace=False))
    train_idx = torch.as_tensor(np.flatnonzero(~held))
    val_idx = torch.as_tensor(np.flatnonzero(held))
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(estimator.parameters(), lr=learning_rate)
    best, best_epoch, best_state, history = np.inf, 0, None, []
    settings = {"n_maps": len(theta), "n_cosmologies": n_groups, "augment": augment,
                "batch_size": batch_size, "learning_rate": learning_rate,
                "stop_after_epochs": stop_after_epochs,
                "validation_fraction": validation_fraction, "seed": seed,
                "parameters": sum(p.numel() for p in estimator.parameters())}  # fmt: skip
    before = 0.0  # training seconds of earlier runs of a resumed state
    if checkpoint is not None and Path(checkpoint).is_file():
        resumed = _load_fit_state(Path(checkpoint), settings, estimator, opt, gen)
        best, best_epoch, best_state, history, before = resumed
        if log:
            log(f"resumed from {checkpoint} after epoch {len(history)}")
    step = min(batch_size, len(train_idx))
    saved = started = time.monotonic()
    for epoch in range(len(history), max_epochs):
        if epoch + 1 - best_epoch > stop_after_epochs and history:
            break  # a resumed run that had already stopped
        estimator.train()
        order = train_idx[torch.randperm(len(train_idx), generator=gen)]
        for i in range(0, len(order) - step + 1, step):  # whole batches, as sbi
            idx = order[i : i + step]
            xb = _dihedral(x[idx], n_bins, n_pix, gen) if augment else x[idx]
            loss = estimator.loss(theta[idx], condition=xb).mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(estimator.parameters(), max_norm=5.0)
            opt.step()
        estimator.eval()
        with torch.no_grad():
            val = float(torch.cat([estimator.loss(theta[j], condition=x[j])
                                   for j in val_idx.split(1024)]).mean())  # fmt: skip
        history.append(val)
        if val < best:
            best, best_epoch = val, epoch + 1
            best_state = {k: v.detach().clone() for k, v in estimator.state_dict().items()}
        if log:
            log(f"epoch {epoch + 1}: validation loss {val:.4f} (best {best:.4f} at "
                f"{best_epoch})")  # fmt: skip
        stop = epoch + 1 - best_epoch >= stop_after_epochs
        last = stop or epoch + 1 == max_epochs
        if checkpoint is not None and (time.monotonic() - saved > 60 * every_minutes or last):
            _save_fit_state(Path(checkpoint), settings, estimator, opt, gen,
                            (best, best_epoch, best_state, history),
                            before + time.monotonic() - started)  # fmt: skip
            saved = time.monotonic()
        if stop:
            break
    estimator.load_state_dict(best_state)
    return {"epochs": len(history), "best_epoch": best_epoch,
            "best_validation_loss": float(best), "validation_loss": history,
            "n_validation_cosmologies": n_val,
            "seconds": before + time.monotonic() - started}  # fmt: skip


def _save_fit_state(path: Path, settings: dict, estimator: nn.Module, opt, gen,
                    progress: tuple, seconds: float) -> None:  # fmt: skip
    """Write the training state as safetensors with a JSON header, atomically; ``seconds``:
    the training time so far, over every run that led to this state."""
    best, best_epoch, best_state, history = progress
    tensors = {f"model.{k}": v for k, v in estimator.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in best_state.items()})
    tensors.update(optimizer_tensors(opt.state_dict()))
    tensors["generator"] = gen.get_state()
    meta = {
        "settings": settings,
        "best": best,
        "best_epoch": best_epoch,
        "history": history,
        "seconds": round(float(seconds), 1),
    }
    write_state_atomic(path, tensors, meta)


def _load_fit_state(path: Path, settings: dict, estimator: nn.Module, opt, gen) -> tuple:
    """Restore a state written by :func:`_save_fit_state`; refused if its settings differ."""
    try:
        tensors, meta = read_state(path)
    except Exception as exc:  # a damaged file: name it and the fix
        raise DataFileError(f"cannot resume from {path}: it is damaged or not an NPE training "
                            f"state ({exc}); delete it to start again") from exc  # fmt: skip
    differ = [k for k in settings if meta["settings"].get(k) != settings[k]]
    if differ:
        raise InputError(f"cannot resume from {path}: it was written with other settings "
                         f"({', '.join(differ)}); delete it or train with its "
                         "settings")  # fmt: skip
    estimator.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    opt.load_state_dict(optimizer_state(tensors, opt.state_dict()["param_groups"]))
    gen.set_state(tensors["generator"])
    # a state written before the time was kept reports NaN: unknown, not zero
    seconds = float(meta.get("seconds", math.nan))
    return meta["best"], meta["best_epoch"], best_state, meta["history"], seconds


def _version(package: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return None
