"""Where the network's likelihood errs in theta: the posterior shift it causes, per timestep band.

    .venv/bin/python scripts/theta_error.py [--model lognormal64] [--n-maps 300] \
        [--bf16-maps 100] [--out docs/results/theta_error_lognormal64.json]
    .venv/bin/python scripts/theta_error.py --table [--out ...]
    .venv/bin/python scripts/theta_error.py --figure docs/figures/theta_error.png [--out ...]

The full VLB log L(theta) = -sum_t w_t E||eps - eps_hat(x_t, t, theta)||^2 of a network
differs from the oracle's (the exact denoiser of the log-normal simulator) by a function
delta(theta) of theta. Around the posterior a smooth delta moves the posterior mean by
Sigma grad delta (Sigma: the posterior covariance; the same under any temperature), so

    shift_i = (Sigma g)_i / sigma_i,   g = grad delta = sum_b g_b,

in units of the exact posterior's sigma, with g_b the part of the gradient from timestep
band b. For each map (simulated at theta uniform in the prior, seed 4242: never training,
calibration or test maps) the script takes the exact posterior's mean mu and covariance
Sigma, draws ``--per-band`` timesteps per band (stratified, weighted to the band's sum of
terms) with one noise draw each, and evaluates every term with the network and with the
oracle on the *same* x_t at mu -+ h sigma_i e_i (h = ``--step``; centred differences, the
pair moved inside the prior box where needed). The estimator's Monte Carlo noise enters both
denoisers identically and cancels in network - oracle; what is left is the network's error
in the theta-dependence of eps_hat, resolved per band and per map. ``--bf16-maps`` repeats
the network's terms under bf16 autocast for the first maps (the precision ``"auto"`` picks
on a GPU or an AMX CPU).

Results are appended per map to ``--out`` (atomically; a rerun resumes).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from diffinfer.diffusion import DiffusionModel, load_model
from diffinfer.diffusion.model import autocast
from diffinfer.inference.posterior import posterior
from diffinfer.io import read_json, write_json_atomic
from diffinfer.likelihoods.terms import term_weights
from diffinfer.simulators import LognormalSimulator

BANDS = ((1, 3), (4, 10), (11, 30), (31, 100), (101, 300), (301, 1000))
SEED = 4242
PARAMS = ("Omega_m", "sigma_8")


def band_plan(per_band: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Timesteps, their band index and the factor that makes each band's sum unbiased."""
    ts, bands, factor = [], [], []
    for b, (lo, hi) in enumerate(BANDS):
        size = hi - lo + 1
        if size <= per_band:
            t = np.arange(lo, hi + 1)
            f = np.ones(size)
        else:  # stratified uniform: one timestep in each of per_band equal parts
            u = (np.arange(per_band) + rng.random(per_band)) / per_band
            t = lo + np.floor(u * size).astype(int)
            f = np.full(per_band, size / per_band)
        ts.append(t)
        bands.append(np.full(len(t), b))
        factor.append(f)
    return np.concatenate(ts), np.concatenate(bands), np.concatenate(factor)


def term_values(
    model: DiffusionModel,
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: torch.Tensor,
    thetas: np.ndarray,
    precision: str = "fp32",
    chunk: int = 64,
) -> np.ndarray:
    """||eps - eps_hat(x_t, t, theta)||^2 for every theta row and term: (P, K) float64.
    ``precision="wiener"``: eps_hat of the network's spectral branch alone (fp32)."""
    dtype = torch.float64 if model.is_oracle else torch.float32
    if precision == "wiener":
        return term_values(WienerPart(model), x_t, eps, t, thetas, "fp32", chunk)
    out = np.empty((len(thetas), len(t)))
    with torch.no_grad():
        for p, theta in enumerate(thetas):
            th = torch.as_tensor(theta, dtype=dtype).expand(len(t), 2)
            for lo in range(0, len(t), chunk):
                sl = slice(lo, lo + chunk)
                with autocast("cpu", precision if not model.is_oracle else "fp32"):
                    e = model(x_t[sl].to(dtype), t[sl], th[sl])
                out[p, sl] = (e.double() - eps[sl]).pow(2).sum(dim=(1, 2, 3)).numpy()
    return out


class WienerPart(torch.nn.Module):
    """The spectral branch of a network as a denoiser of its own (its learned Wiener filter)."""

    def __init__(self, model: DiffusionModel) -> None:
        super().__init__()
        self.unet = model.denoiser
        self.is_oracle = False

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        unit = self.unet.config.prior.to_unit(theta.to(x_t.dtype))
        return self.unet.spectral(x_t, t, unit)


def probe_points(
    mu: np.ndarray, sd: np.ndarray, h: float, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """theta rows c_i +- h sd_i e_i (i = 0, 1), each pair's centre moved inside the box."""
    pts, steps = [], []
    for i in range(2):
        step = min(h * sd[i], 0.45 * (high[i] - low[i]))
        c = mu.copy()
        c[i] = np.clip(c[i], low[i] + step * 1.001, high[i] - step * 1.001)
        for sgn in (+1, -1):
            p = c.copy()
            p[i] += sgn * step
            pts.append(p)
        steps.append(step)
    return np.array(pts), np.array(steps)


def band_gradients(
    values: np.ndarray, w: np.ndarray, band: np.ndarray, steps: np.ndarray
) -> np.ndarray:
    """Per band, the centred-difference gradient of log L = -sum w ||.||^2: (bands, 2)."""
    g = np.zeros((len(BANDS), 2))
    for i in range(2):
        d = -(values[2 * i] - values[2 * i + 1]) * w / (2 * steps[i])
        g[:, i] = np.bincount(band, weights=d, minlength=len(BANDS))
    return g


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    net = load_model(args.model)
    sim = LognormalSimulator(net.field, net.transform)
    oracle = DiffusionModel.oracle(sim, net.schedule)
    w_all = term_weights(net).numpy()
    prior = net.field.prior
    low, width = np.asarray(prior.low, float), np.asarray(prior.width, float)
    out = Path(args.out)
    state = read_json(out) if out.exists() else {"model": args.model, "maps": []}
    if state.get("settings", {}).get("per_band", args.per_band) != args.per_band:
        raise SystemExit(f"{out} was made with other settings; use another --out")
    state["settings"] = {"per_band": args.per_band, "step": args.step, "seed": SEED,
                         "bands": [list(b) for b in BANDS]}  # fmt: skip
    rng = np.random.default_rng(SEED)
    thetas = low + width * rng.random((args.n_maps, 2))
    entries = {m["index"]: m for m in state["maps"]}
    t_start = time.perf_counter()
    for i in range(args.n_maps):
        precisions = ["fp32", "wiener"] + (["bf16"] if i < args.bf16_maps else [])
        entry = entries.get(i)
        todo = [p for p in precisions if entry is None or f"shift_{p}" not in entry]
        if not todo:
            continue
        t0 = time.perf_counter()
        density = sim.simulate(thetas[i], 1, seed=SEED, row_offset=i)[0]
        if entry is None:
            exact = posterior(density, model=None, likelihood="exact", progress=False).grid()
            mu, cov = np.asarray(exact.mean(), float), np.asarray(exact.cov(), float)
        else:
            mu, cov = np.asarray(entry["mu"]), np.asarray(entry["cov"])
        sd = np.sqrt(np.diag(cov))
        g = torch.Generator().manual_seed(SEED + 1 + i)
        t_np, band, factor = band_plan(args.per_band, np.random.default_rng(SEED + 1 + i))
        y = net.to_model_space(density)
        t = torch.as_tensor(t_np)
        eps = torch.randn(len(t), 1, *y.shape, generator=g, dtype=torch.float64)
        ab = net.schedule.alpha_bar[t].reshape(-1, 1, 1, 1)
        x_t = ab.sqrt() * y + (1 - ab).sqrt() * eps
        pts, steps = probe_points(mu, sd, args.step, low, low + width)
        w = w_all[t_np - 1] * factor
        if entry is None:
            g_or = band_gradients(term_values(oracle, x_t, eps, t, pts), w, band, steps)
            entry = {"index": i, "truth": thetas[i].tolist(), "mu": mu.tolist(),
                     "cov": cov.tolist(), "probe_steps": steps.tolist(),
                     "g_oracle": g_or.tolist(), "seconds": 0.0}  # fmt: skip
            state["maps"].append(entry)
            entries[i] = entry
        g_or = np.asarray(entry["g_oracle"])
        for prec in todo:
            g_net = band_gradients(term_values(net, x_t, eps, t, pts, prec), w, band, steps)
            dg = g_net - g_or
            entry[f"dg_{prec}"] = dg.tolist()
            entry[f"shift_{prec}"] = ((cov @ dg.T).T / sd).tolist()  # (bands, 2) in sigma
        entry["seconds"] += time.perf_counter() - t0
        write_json_atomic(out, state)
        total = np.sum(entry[f"shift_{todo[-1]}"], axis=0)
        print(f"map {i + 1}/{args.n_maps} theta=({thetas[i][0]:.3f}, {thetas[i][1]:.3f}) "
              f"shift {todo[-1]} ({total[0]:+.3f}, {total[1]:+.3f}) "
              f"({time.perf_counter() - t0:.1f} s, "
              f"{(time.perf_counter() - t_start) / 60:.1f} min)", flush=True)  # fmt: skip


def load(path: str) -> dict:
    state = read_json(path)
    maps = state["maps"]
    truth = np.array([m["truth"] for m in maps])
    out = {"truth": truth, "n": len(maps)}
    for prec in ("fp32", "bf16", "wiener"):
        rows = [m for m in maps if f"shift_{prec}" in m]
        if rows:
            out[prec] = np.array([m[f"shift_{prec}"] for m in rows])  # (maps, bands, 2)
            out[prec + "_truth"] = np.array([m["truth"] for m in rows])
    return out


def mean_se(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), x.std(axis=0, ddof=1) / np.sqrt(len(x))


def table(path: str) -> str:
    d = load(path)
    names = [f"{lo}–{hi}" for lo, hi in BANDS]
    lines = []
    names_of = {"fp32": "network (fp32) − oracle", "bf16": "network (bf16) − oracle",
                "wiener": "the network's spectral branch alone − oracle"}  # fmt: skip
    for prec in ("fp32", "wiener", "bf16"):
        if prec not in d:
            continue
        s, tr = d[prec], d[prec + "_truth"]
        lines.append(f"\n{names_of[prec]}, {len(s)} maps: shift of the posterior mean "
                     "[σ_exact], per timestep band (mean ± s.e. over maps)\n")  # fmt: skip
        lines.append("| maps | n | " + " | ".join(names) + " | all t |")
        lines.append("|---|---|" + "---|" * (len(names) + 1))
        om, s8 = tr[:, 0], tr[:, 1]
        groups = [("all", np.ones(len(s), bool)), ("Ω_m < 0.2", om < 0.2),
                  ("Ω_m 0.2–0.3", (om >= 0.2) & (om < 0.3)),
                  ("Ω_m 0.3–0.4", (om >= 0.3) & (om < 0.4)), ("Ω_m ≥ 0.4", om >= 0.4),
                  ("σ_8 < 0.7", s8 < 0.7), ("σ_8 ≥ 0.9", s8 >= 0.9)]  # fmt: skip
        for label, sel in groups:
            if sel.sum() < 3:
                continue
            per = s[sel]
            m, e = mean_se(per)
            tm, te = mean_se(per.sum(axis=1))
            for k, par in enumerate(("Ω_m", "σ_8")):
                cells = [f"{m[b, k]:+.3f} ± {e[b, k]:.3f}" for b in range(len(names))]
                lines.append(f"| {label}, {par} | {sel.sum()} | " + " | ".join(cells)
                             + f" | **{tm[k]:+.3f} ± {te[k]:.3f}** |")  # fmt: skip
    if "bf16" in d:
        n = len(d["bf16"])
        diff = d["bf16"].sum(axis=1) - d["fp32"][:n].sum(axis=1)
        m, e = mean_se(diff)
        lines.append(f"\nbf16 − fp32 on the same {n} maps (all t): Ω_m {m[0]:+.3f} ± {e[0]:.3f}, "
                     f"σ_8 {m[1]:+.3f} ± {e[1]:.3f}")  # fmt: skip
    return "\n".join(lines)


def figure(path: str, dest: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = load(path)
    s, tr = d["fp32"], d["fp32_truth"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    x = np.arange(len(BANDS))
    for k, (par, c) in enumerate(zip(("Ω_m", "σ_8"), ("C0", "C3"), strict=True)):
        m, e = mean_se(s[..., k])
        axes[0].errorbar(
            x + (k - 0.5) * 0.15, m, e, fmt="o", color=c, capsize=3, label=f"{par}, fp32"
        )
        if "bf16" in d:
            mb, eb = mean_se(d["bf16"][..., k])
            axes[0].errorbar(x + (k - 0.5) * 0.15 + 0.3, mb, eb, fmt="s", color=c, mfc="none",
                             capsize=3, label=f"{par}, bf16")  # fmt: skip
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_xticks(x, [f"{lo}–{hi}" for lo, hi in BANDS])
    axes[0].set_xlabel("timestep band")
    axes[0].set_ylabel("mean shift of the posterior mean [σ_exact]")
    axes[0].set_title(f"network − oracle, per band ({len(s)} maps)")
    axes[0].legend(fontsize=8)
    total = s.sum(axis=1)  # (maps, 2): the shift from every timestep
    for ax, j, edges, label in ((axes[1], 0, np.linspace(0.1, 0.5, 6), "true Ω_m"),
                                (axes[2], 1, np.linspace(0.6, 1.0, 6), "true σ_8")):  # fmt: skip
        centres = 0.5 * (edges[1:] + edges[:-1])
        for k, (par, c) in enumerate(zip(("Ω_m", "σ_8"), ("C0", "C3"), strict=True)):
            m, e = [], []
            for lo, hi in itertools.pairwise(edges):
                sel = (tr[:, j] >= lo) & (tr[:, j] < hi)
                mm, ee = mean_se(total[sel, k])
                m.append(mm)
                e.append(ee)
            off = (k - 0.5) * 0.01 * (edges[-1] - edges[0]) / 0.4
            ax.errorbar(centres + off, m, e, fmt="o-", color=c, capsize=3, label=f"shift in {par}")
        ax.axhline(0, color="k", lw=0.8)
        for v in (-0.1, 0.1):
            ax.axhline(v, color="gray", lw=0.8, ls=":")
        ax.set_xlabel(label)
        ax.set_ylabel("mean shift, all t [σ_exact]")
        ax.set_title(f"network − oracle, fp32, by {label} (± 1 s.e.)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=120)
    print(f"wrote {dest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lognormal64")
    parser.add_argument("--n-maps", type=int, default=300)
    parser.add_argument(
        "--bf16-maps",
        type=int,
        default=0,
        help="also bf16 for the first maps (added to maps already done)",
    )
    parser.add_argument("--per-band", type=int, default=8)
    parser.add_argument("--step", type=float, default=0.5, help="probe step [sigma_exact]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/results/theta_error_lognormal64.json")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--figure")
    args = parser.parse_args()
    if args.table:
        print(table(args.out))
    elif args.figure:
        figure(args.out, args.figure)
    else:
        run(args)


if __name__ == "__main__":
    main()
