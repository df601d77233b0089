"""Validate the particle-mesh N-body maps against theory and against log-normal maps.

1. The 3D matter power spectrum of the final boxes (particles painted on a 2N mesh, CIC
   window deconvolved, shot noise subtracted) against the linear spectrum the initial
   conditions were drawn from (Eisenstein & Hu) and against CAMB's halofit (Takahashi
   2012), applied as CAMB's nonlinear-to-linear ratio on the same linear spectrum.
2. Convergence in the number of time steps (same seed: 10, 20, 40 steps).
3. The maps against log-normal maps of the same cosmology and geometry (the project's
   linear spectrum, same box and slab depth): one-point PDF of ln rho, skewness of
   delta, and the 2D power spectrum.

Writes docs/results/nbody_validation.{json,md} and docs/figures/nbody_{maps,power,pdf}.png.

    python scripts/nbody_validation.py            (about 4 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from diffinfer.cosmology import HUBBLE, N_S, OMEGA_B, linear_power
from diffinfer.fields.stats import power_spectrum
from diffinfer.io import write_json_atomic, write_text_atomic
from diffinfer.simulators.lognormal import LognormalSimulator
from diffinfer.simulators.nbody import NBodyConfig, NBodySimulator

ROOT = Path(__file__).resolve().parents[1]
COSMOLOGIES = [(0.3, 0.8), (0.15, 0.95), (0.45, 0.65)]


def _bin(kk: np.ndarray, p: np.ndarray, box: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    edges = 2 * np.pi / box * np.arange(0.5, n // 2 + 1, 2.0)
    which = np.digitize(kk.ravel(), edges)
    k = np.array([kk.ravel()[which == j].mean() for j in range(1, len(edges))])
    pk = np.array([p.ravel()[which == j].mean() for j in range(1, len(edges))])
    return k, pk


def linear_3d(field: np.ndarray, box: float) -> tuple[np.ndarray, np.ndarray]:
    """Binned power spectrum of a box's own linear density field (same bins)."""
    n = field.shape[0]
    k1 = 2 * np.pi * np.fft.fftfreq(n, box / n)
    kz = 2 * np.pi * np.fft.rfftfreq(n, box / n)
    kk = np.sqrt(k1[:, None, None] ** 2 + k1[None, :, None] ** 2 + kz[None, None, :] ** 2)
    return _bin(kk, np.abs(np.fft.rfftn(field)) ** 2 * box**3 / n**6, box, n)


def power_3d(pos: np.ndarray, n: int, box: float, mesh: int) -> tuple[np.ndarray, np.ndarray]:
    """Binned 3D power spectrum of particles (mesh units of an n^3 grid), CIC on ``mesh``."""
    x = pos * mesh / n
    i = np.floor(x).astype(np.int64)
    f = x - i
    rho = np.zeros(mesh**3)
    for c in np.ndindex(2, 2, 2):
        w = np.prod([f[:, a] if c[a] else 1 - f[:, a] for a in range(3)], axis=0)
        idx = (((i[:, 0] + c[0]) % mesh) * mesh + (i[:, 1] + c[1]) % mesh) * mesh
        idx += (i[:, 2] + c[2]) % mesh
        rho += np.bincount(idx, weights=w, minlength=mesh**3)
    delta = rho.reshape(mesh, mesh, mesh) / rho.mean() - 1
    dk = np.fft.rfftn(delta)
    k1 = 2 * np.pi * np.fft.fftfreq(mesh, box / mesh)
    kz = 2 * np.pi * np.fft.rfftfreq(mesh, box / mesh)
    kk = np.sqrt(k1[:, None, None] ** 2 + k1[None, :, None] ** 2 + kz[None, None, :] ** 2)
    kn = np.pi * mesh / box
    window = (np.sinc(k1[:, None, None] / (2 * kn)) * np.sinc(k1[None, :, None] / (2 * kn))
              * np.sinc(kz[None, None, :] / (2 * kn))) ** 2  # fmt: skip
    p = np.abs(dk / window) ** 2 * box**3 / mesh**6 - box**3 / len(pos)
    return _bin(kk, p, box, n)


def halofit_boost(theta: tuple[float, float], k: np.ndarray) -> np.ndarray:
    """CAMB's halofit (Takahashi) P_nl / P_lin at z = 0 for the CAMELS parameters."""
    import camb

    om, s8 = theta
    kw = dict(H0=100 * HUBBLE, ombh2=OMEGA_B * HUBBLE**2, omch2=(om - OMEGA_B) * HUBBLE**2,
              ns=N_S, WantTransfer=True, kmax=20.0, redshifts=[0.0])  # fmt: skip
    as_ref = 2e-9
    res = camb.get_results(camb.set_params(As=as_ref, **kw))
    amp = as_ref * (s8 / res.get_sigma8_0()) ** 2
    pars = camb.set_params(As=amp, NonLinear=camb.model.NonLinear_both,
                           halofit_version="takahashi", **kw)  # fmt: skip
    kh, _, pnl = camb.get_results(pars).get_matter_power_spectrum(minkh=1e-3, maxkh=10,
                                                                  npoints=400)  # fmt: skip
    pars.NonLinear = camb.model.NonLinear_none
    _, _, plin = camb.get_results(pars).get_matter_power_spectrum(minkh=1e-3, maxkh=10,
                                                                  npoints=400)  # fmt: skip
    return np.interp(k, kh, pnl[0] / plin[0])


def skewness(maps: np.ndarray) -> np.ndarray:
    x = maps.reshape(len(maps), -1)
    d = x - x.mean(1, keepdims=True)
    return (d**3).mean(1) / (d**2).mean(1) ** 1.5


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--boxes", type=int, default=4, help="boxes per cosmology (default 4)")
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    args = p.parse_args()
    cfg = NBodyConfig()
    sim = NBodySimulator(cfg)
    lognormal = LognormalSimulator(cfg.field)
    n, box = cfg.n_particles, cfg.box_size
    report: dict = {"config": cfg.to_dict(), "boxes_per_cosmology": args.boxes,
                    "cosmologies": []}  # fmt: skip
    curves = []
    for theta in COSMOLOGIES:
        ks, pks, own, maps = None, [], [], []
        for b in range(args.boxes):
            pos, lin_field = sim.particles(theta, seed=1000 + b, linear=True)
            ks, pk = power_3d(pos, n, box, 2 * n)
            pks.append(pk)
            own.append(linear_3d(lin_field, box)[1])
            maps.append(sim.maps(pos))
        pks, own, maps = np.array(pks), np.array(own), np.concatenate(maps)
        lin = linear_power(torch.tensor(ks), torch.tensor([theta]))[0].numpy()
        boost = halofit_boost(theta, ks)
        ratio = pks / (lin * boost)
        # over each box's own linear field: cosmic variance cancels on large scales
        own_ratio = pks / (own * boost)
        ln = lognormal.simulate(theta, len(maps), seed=77).reshape(maps.shape)
        sk_nb, sk_ln = skewness(maps - 1), skewness(ln - 1)
        ps_nb = power_spectrum(maps - maps.mean((1, 2), keepdims=True), box)
        ps_ln = power_spectrum(ln - ln.mean((1, 2), keepdims=True), box)
        low = ks < 0.25
        entry = {
            "theta": list(theta),
            "k": ks.tolist(),
            "p_over_halofit": ratio.mean(0).tolist(),
            "p_over_halofit_se": (ratio.std(0, ddof=1) / np.sqrt(args.boxes)).tolist(),
            "p_over_linear": (pks / lin).mean(0).tolist(),
            "p_over_own_linear_times_boost": own_ratio.mean(0).tolist(),
            "p_over_own_linear_times_boost_se": (
                own_ratio.std(0, ddof=1) / np.sqrt(args.boxes)
            ).tolist(),
            "large_scale_over_linear": float((pks[:, low] / lin[low]).mean()),
            "large_scale_over_linear_se": float(
                (pks[:, low] / lin[low]).mean(1).std(ddof=1) / np.sqrt(args.boxes)
            ),
            "skewness_nbody": [float(sk_nb.mean()), float(sk_nb.std(ddof=1) / np.sqrt(len(sk_nb)))],
            "skewness_lognormal": [
                float(sk_ln.mean()),
                float(sk_ln.std(ddof=1) / np.sqrt(len(sk_ln))),
            ],
            "std_delta_nbody": float(maps.std()),
            "std_delta_lognormal": float(ln.std()),
            "min_density_nbody": float(maps.min()),
            "power2d_ratio_nbody_over_lognormal": (
                ps_nb.power.mean(0) / ps_ln.power.mean(0)
            ).tolist(),
            "power2d_k": ps_nb.k.tolist(),
            "n_maps": len(maps),
        }
        report["cosmologies"].append(entry)
        curves.append((theta, ks, ratio, maps, ln))
        print(theta, f"P/halofit at k<0.5: {np.round(ratio.mean(0)[ks < 0.5], 3)}",
              f"skew {sk_nb.mean():.2f} vs {sk_ln.mean():.2f}")  # fmt: skip
    # time-step convergence, one box
    steps = {}
    for s in (10, 20, 40):
        pos = NBodySimulator(NBodyConfig(n_steps=s)).particles(COSMOLOGIES[0], seed=1000)
        steps[s] = power_3d(pos, n, box, 2 * n)
    k = steps[10][0]
    report["steps"] = {"k": k.tolist(), **{f"{s}_over_40": (steps[s][1] / steps[40][1]).tolist()
                                           for s in (10, 20)}}  # fmt: skip
    out = args.out
    write_json_atomic(out / "results" / "nbody_validation.json", report)
    write_text_atomic(out / "results" / "nbody_validation.md", table(report))
    figures(curves, out / "figures")
    print(table(report))


def table(report: dict) -> str:
    cfg = report["config"]
    lines = [f"N-body maps: {cfg['n_particles']}^3 particles, {cfg['mesh']}^3 mesh, "
             f"{cfg['box_size']:g} Mpc/h box, {cfg['n_steps']} steps from a = "
             f"{cfg['a_initial']}, {cfg['n_slabs']} slabs of {cfg['depth']:g} Mpc/h, "
             f"{cfg['n_pix']}^2 pixels; {report['boxes_per_cosmology']} boxes per cosmology.",
             "", "P/halofit: the boxes' power over the halofit prediction; the second column "
             "divides by each box's own linear field times halofit's boost (cosmic variance "
             "cancels).", "",
             "| theta | P/halofit, k = 0.1 / 0.3 / 0.5 / 0.8 / 1.2 | same, own linear field "
             "| skewness N-body | skewness log-normal | min rho |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for e in report["cosmologies"]:
        k = np.array(e["k"])
        r, se = np.array(e["p_over_halofit"]), np.array(e["p_over_halofit_se"])
        picks = [int(np.argmin(abs(k - x))) for x in (0.1, 0.3, 0.5, 0.8, 1.2)]
        hf = " / ".join(f"{r[i]:.2f}±{se[i]:.2f}" for i in picks)
        r2 = np.array(e["p_over_own_linear_times_boost"])
        se2 = np.array(e["p_over_own_linear_times_boost_se"])
        own = " / ".join(f"{r2[i]:.3f}±{se2[i]:.3f}" for i in picks)
        lines.append(f"| ({e['theta'][0]}, {e['theta'][1]}) | {hf} | {own} | "
                     f"{e['skewness_nbody'][0]:.2f} ± {e['skewness_nbody'][1]:.2f} | "
                     f"{e['skewness_lognormal'][0]:.2f} ± {e['skewness_lognormal'][1]:.2f} | "
                     f"{e['min_density_nbody']:.3f} |")  # fmt: skip
    st = report["steps"]
    k = np.array(st["k"])
    picks = [int(np.argmin(abs(k - x))) for x in (0.1, 0.3, 0.5, 1.0, 1.5)]
    lines += ["", "Time steps (one box, theta = (0.3, 0.8)): P(k) relative to 40 steps at "
              "k = " + ", ".join(f"{k[i]:.2f}" for i in picks) + " h/Mpc:", ""]  # fmt: skip
    for s in (10, 20):
        lines.append(f"- {s} steps: " + ", ".join(f"{st[f'{s}_over_40'][i]:.3f}" for i in picks))
    return "\n".join(lines) + "\n"


def figures(curves, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffinfer.styles import STYLES

    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, len(curves), figsize=(3.2 * len(curves), 6.4))
    for j, (theta, _, _, maps, ln) in enumerate(curves):
        for i, (m, what) in enumerate(((maps[0], "N-body"), (ln[0], "log-normal"))):
            ax = axes[i, j]
            ax.imshow(np.log10(m), cmap="magma", vmin=-1, vmax=1.5)
            ax.set_title(f"{what}, Ωm={theta[0]}, σ8={theta[1]}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out / "nbody_maps.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for theta, k, ratio, _, _ in curves:
        m, se = ratio.mean(0), ratio.std(0, ddof=1) / np.sqrt(len(ratio))
        ax.errorbar(k, m, se, marker="o", ms=3, capsize=2, label=f"Ωm={theta[0]}, σ8={theta[1]}")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("k [h/Mpc]")
    ax.set_ylabel("P_N-body / P_halofit")
    ax.axvline(np.pi * 64 / 128, color="grey", ls=":", lw=0.8)
    ax.text(np.pi * 64 / 128, 0.2, " mesh Nyquist", fontsize=7, color="grey")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "nbody_power.png", dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3.0), sharey=True)
    bins = np.linspace(-3.5, 3.5, 71)
    for ax, (theta, _, _, maps, ln) in zip(axes, curves, strict=True):
        for m, name in ((maps, "simulated"), (ln, "exact")):
            st = STYLES[name]
            ax.hist(np.log(m).ravel(), bins=bins, density=True, histtype="step",
                    color=st.colour, ls=st.ls,
                    label="N-body" if name == "simulated" else "log-normal")  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("ln ρ")
        ax.set_title(f"Ωm={theta[0]}, σ8={theta[1]}", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "nbody_pdf.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
