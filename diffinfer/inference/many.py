"""Posteriors of many maps in one pass: :func:`posteriors`.

Each map's posterior is :func:`~diffinfer.inference.posterior.posterior`'s, with the same
options and seed; what changes is how the grids of a diffusion likelihood are computed. Up
to ``batch`` maps run at once, each in its own thread as it would alone (locator, aligned
grid, added timesteps), and their denoiser calls meet in a
:class:`~diffinfer.diffusion.batching.SharedNetwork`: each network call carries maps x theta
x timesteps. A map's result is the one-map result up to the floating-point differences of
another batch shape (tests/test_many.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch

from diffinfer.diffusion.batching import SharedNetwork
from diffinfer.diffusion.model import DiffusionModel
from diffinfer.errors import DiffinferError, InputError
from diffinfer.inference.posterior import Posterior, posterior
from diffinfer.likelihoods.terms import DEFAULT_TERMS, default_max_batch
from diffinfer.validation import check_bool, check_int

GRID_EVALUATIONS = 512
"""Denoiser evaluations of one map's aligned grid at the defaults (8^2 theta x 8 timesteps):
the unit :func:`default_batch` divides the network's memory-bounded call by."""

MAX_BATCH_MAPS = 64
"""Maps computed at once at most (one thread each)."""


def default_batch(model: DiffusionModel) -> int:
    """Maps computed at once by :func:`posteriors`: on a GPU, as many aligned grids as one
    network call holds (:func:`~diffinfer.likelihoods.terms.default_max_batch`, a quarter of
    the free memory), at most :data:`MAX_BATCH_MAPS`; on a CPU one, since a single map's
    calls already fill its fastest call (16 evaluations: docs/performance.md) and more maps
    per call only lengthen it (benchmarks/bench_posteriors.py)."""
    if model.device.type == "cpu":
        return 1
    return int(max(1, min(MAX_BATCH_MAPS, default_max_batch(model) // GRID_EVALUATIONS)))


def posteriors(
    fields: Sequence | np.ndarray,
    model: str | DiffusionModel | None = "lognormal64",
    likelihood: str | list[int] = DEFAULT_TERMS,
    method: str = "grid",
    prior=None,
    seed: int = 0,
    kind: str = "density",
    progress: bool = True,
    batch: int | None = None,
    **options,
) -> list[Posterior]:
    """One posterior per map, as :func:`~diffinfer.inference.posterior.posterior` gives each,
    with the network calls of many maps batched together.

    Parameters
    ----------
    fields
        The maps: a stack (M, N, N), or a sequence whose items are what ``posterior`` takes
        as its ``field`` (a map, a file, or a stack of maps of one cosmology).
    model, likelihood, method, prior, seed, kind, options
        As for ``posterior``, the same for every map (every map gets the same ``seed``, as
        every call of ``posterior`` gets the default one).
    progress
        One bar over the maps (none per map).
    batch
        Maps computed at once (default :func:`default_batch`: from the device and its free
        memory). Only the grids of a diffusion likelihood are batched; with another
        likelihood the maps run one after another, and with ``method="emcee"`` or
        ``"nuts"`` the posteriors are returned unsampled (``sample()`` runs each chain).

    Returns
    -------
    list of Posterior
        In the order of ``fields``; with ``method="grid"``, each grid already computed.

    Raises
    ------
    DiffinferError
        When a map's posterior fails: the message names the map; the other maps' posteriors
        are still computed first.
    """
    check_bool("progress", progress)
    if batch is not None:  # refused before any posterior is built, whatever the method
        check_int("batch", batch, low=1, what="maps computed at once")
    if isinstance(fields, (str, os.PathLike)) or (
        isinstance(fields, (np.ndarray, torch.Tensor)) and fields.ndim != 3
    ):
        raise InputError("fields must be a stack of maps (M, N, N) or a sequence of maps or "
                         "files; for one map, use diffinfer.posterior")  # fmt: skip
    items = list(fields)
    if not items:
        raise InputError("fields holds no maps")
    if isinstance(model, (str, os.PathLike)):
        from diffinfer.diffusion.checkpoint import load_model

        model = load_model(model)
    posts = []
    for i, field in enumerate(items):
        post = posterior(field, model=model, likelihood=likelihood, method=method,
                         prior=prior, seed=seed, kind=kind, progress=False,
                         **options)  # fmt: skip
        post.name = f"map {i}"
        posts.append(post)
    if method == "grid":
        compute_grids(posts, batch=batch, progress=progress)
    return posts


def compute_grids(posts: Sequence[Posterior], batch: int | None = None,
                  progress: bool = True) -> None:  # fmt: skip
    """Compute the grid of every posterior (:meth:`Posterior.grid`) in one pass: the engine
    of :func:`posteriors`, for posteriors built one by one (calibration studies check each
    before computing it).

    Parameters
    ----------
    posts
        Posteriors of one model (``method="grid"``).
    batch
        Maps computed at once (default :func:`default_batch`); only posteriors of a
        network's diffusion likelihood are batched, the others are computed one by one.
    progress
        One bar over the maps.

    Raises
    ------
    DiffinferError
        When a map's grid fails, naming the map (:attr:`Posterior.name`), after the other
        maps are computed.
    """
    from tqdm.auto import tqdm

    check_bool("progress", progress)
    networked = [p for p in posts if p.stochastic is not None and not p.stochastic.model.is_oracle]
    models = {id(p.stochastic.model): p.stochastic.model for p in networked}
    if len(models) > 1:
        raise InputError("compute_grids batches the posteriors of one model; these use "
                         f"{len(models)}: compute each model's posteriors apart")  # fmt: skip
    model = next(iter(models.values()), None)
    if batch is None:
        batch = default_batch(model) if model is not None else 1
    batch = check_int("batch", batch, low=1, what="maps computed at once")
    # no tqdm object unless shown: its first one creates a multiprocessing lock, which a
    # study's worker process killed on Ctrl-C would leak
    bar = tqdm(total=len(posts), desc="posteriors") if progress else None
    advance = bar.update if bar is not None else (lambda: None)
    failed: dict[int, Exception] = {}
    try:
        if model is not None and batch > 1:
            _batched_grids(list(posts), model, min(batch, len(posts)), advance, failed)
        else:
            for i, post in enumerate(posts):
                try:
                    post.grid()
                except Exception as exc:  # reported below, naming the map
                    failed[i] = exc
                advance()
    finally:
        if bar is not None:
            bar.close()
    if failed:
        i = min(failed)
        raise DiffinferError(
            f"the {posts[i].name} failed ({len(failed)} of {len(posts)} maps failed): {failed[i]}"
        ) from failed[i]


def _batched_grids(
    posts: list[Posterior],
    model: DiffusionModel,
    batch: int,
    advance: Callable[[], object],
    failed: dict[int, Exception],
) -> None:
    """Every posterior's grid, ``batch`` maps at a time in threads sharing one network;
    the maps that fail go into ``failed`` (index: exception)."""
    shared = SharedNetwork(model, batch, default_max_batch(model))
    queue = list(range(len(posts)))[::-1]
    lock = threading.Lock()

    def work() -> None:
        with shared.member():
            while True:
                with lock:
                    if not queue:
                        return
                    i = queue.pop()
                post = posts[i]
                like = post.stochastic
                if like is not None:
                    like.network = shared
                try:
                    post.grid()
                except Exception as exc:  # reported below, naming the map
                    failed[i] = exc
                finally:
                    if like is not None:
                        like.network = None
                with lock:
                    advance()

    # daemon threads: an interrupt of the main thread ends the process, not waits for them
    threads = [threading.Thread(target=work, name=f"diffinfer-map-{k}", daemon=True)
               for k in range(batch)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
