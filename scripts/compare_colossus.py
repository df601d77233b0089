"""Largest relative difference between diffinfer's P_3D and colossus' eisenstein98.

.venv/bin/python scripts/compare_colossus.py
"""

from __future__ import annotations

import numpy as np
import torch
from colossus.cosmology import cosmology

from diffinfer.cosmology import HUBBLE, N_S, OMEGA_B, T_CMB, linear_power

k = np.geomspace(1e-3, 10.0, 400)
print("| Omega_m | sigma_8 | max abs(P / P_colossus - 1), 1e-3 < k < 10 h/Mpc |")
print("|---:|---:|---:|")
for om, s8 in [(0.1, 0.6), (0.2, 0.95), (0.3, 0.8), (0.5, 1.0)]:
    cosmo = cosmology.setCosmology(
        "compare",
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
        interpolation=False,
    )
    ref = cosmo.matterPowerSpectrum(k, z=0.0, model="eisenstein98")
    ours = linear_power(torch.as_tensor(k), torch.tensor([[om, s8]])).numpy()[0]
    print(f"| {om} | {s8} | {np.max(np.abs(ours / ref - 1)):.1e} |")
