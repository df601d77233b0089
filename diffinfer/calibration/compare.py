"""Comparing two sets of posterior samples: a classifier two-sample test.

If two samples come from the same distribution, no classifier can tell them apart: its
held-out accuracy is 0.5 up to noise. The classifier here is k-nearest neighbours in the
whitened parameter space (pooled covariance), with k-fold cross-validation; it needs no
training beyond a KD-tree and no extra dependency.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from diffinfer.errors import InputError


def two_sample_accuracy(
    a: np.ndarray, b: np.ndarray, *, k: int | None = None, folds: int = 5, seed: int = 0
) -> float:
    """Cross-validated k-NN accuracy of telling samples ``a`` from samples ``b``.

    Parameters
    ----------
    a, b
        Samples, shape (n_a, d) and (n_b, d); the larger is subsampled to the smaller size.
    k
        Neighbours (default: the odd number nearest sqrt(n)).
    folds
        Cross-validation folds.
    seed
        Seeds the subsampling and the folds.

    Returns
    -------
    float
        Mean held-out accuracy: 0.5 for indistinguishable samples, 1 for disjoint ones.
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2 * folds:
        raise InputError(f"need two samples of equal dimension with >= {2 * folds} draws each")
    rng = np.random.default_rng(seed)
    n = min(len(a), len(b))
    x = np.concatenate([a[rng.choice(len(a), n, replace=False)],
                        b[rng.choice(len(b), n, replace=False)]])  # fmt: skip
    y = np.repeat([0, 1], n)
    centred = x - x.mean(axis=0)
    whiten = np.linalg.cholesky(np.linalg.inv(np.atleast_2d(np.cov(centred.T))))
    x = centred @ whiten
    k = k or max(1, int(np.sqrt(n)) // 2 * 2 + 1)
    order = rng.permutation(2 * n)
    correct = 0.0
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        _, idx = cKDTree(x[train]).query(x[test], k=k)
        votes = y[train][np.atleast_2d(idx.T).T].mean(axis=1) if k > 1 else y[train][idx]
        pred = np.where(votes == 0.5, rng.integers(0, 2, len(test)), votes > 0.5)
        correct += np.sum(pred == y[test])
    return float(correct / (2 * n))
