"""Largest relative difference between diffinfer's P_3D and colossus' eisenstein98.

    .venv/bin/python scripts/compare_colossus.py

``tests/test_cosmology.py`` asserts on :func:`max_relative_difference`.
"""

from __future__ import annotations

import numpy as np
import torch

from diffinfer.cosmology import HUBBLE, N_S, OMEGA_B, T_CMB, linear_power

THETAS = [(0.1, 0.6), (0.2, 0.95), (0.3, 0.8), (0.5, 1.0)]
K = np.geomspace(1e-3, 10.0, 400)


def max_relative_difference(om: float, s8: float, k: np.ndarray = K) -> float:
    """max |P_diffinfer / P_colossus - 1| over ``k`` (h/Mpc) at (Omega_m, sigma_8)."""
    from colossus.cosmology import cosmology

    cosmo = cosmology.setCosmology(
        "diffinfer-compare",
        params=dict(
            flat=True,
            H0=100 * HUBBLE,
            Om0=om,
            Ob0=OMEGA_B,
            sigma8=s8,
            ns=N_S,
            Tcmb0=T_CMB,
            relspecies=False,
        ),
        persistence="",
        interpolation=False,  # colossus' interpolation tables are ~1 % off at low Omega_m
    )
    ref = cosmo.matterPowerSpectrum(k, z=0.0, model="eisenstein98")
    ours = linear_power(torch.as_tensor(k), torch.tensor([[om, s8]])).numpy()[0]
    return float(np.max(np.abs(ours / ref - 1)))


def main() -> None:
    print("| Omega_m | sigma_8 | max abs(P / P_colossus - 1), 1e-3 < k < 10 h/Mpc |")
    print("|---:|---:|---:|")
    for om, s8 in THETAS:
        print(f"| {om} | {s8} | {max_relative_difference(om, s8):.1e} |")


if __name__ == "__main__":
    main()
