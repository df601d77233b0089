"""Emulation samplers against fresh simulations: power and one-point PDF at 5 cosmologies.

For each model (``oracle``, the exact denoiser, and/or a trained network), each cosmology of
``COSMOLOGIES`` (spread over the prior box) and each sampler configuration
``sampler:spacing:calls``, emulate ``--maps`` maps (the same starting noise for every
configuration of a cosmology) and compare them with ``--sims`` fresh simulations:

- the power spectrum of delta = rho - 1 in the default |k| bins: per map r = mean over bins of
  P_map(k) / P_sim(k), so that the mean of r - 1 is the signed mean power error and its
  standard error (emulated and simulated maps together) the noise floor; the mean over bins
  of abs(mean P_em / mean P_sim - 1) as well;
- the one-point PDF of delta: its standard deviation (ratio to the simulations') and
  skewness (difference), with standard errors over maps.

Every finished entry is written at once (atomically) to ``--json``; a rerun skips what is
there, so an interrupted run resumes. ``--figure`` draws error against network calls from
the JSON files given. Commands of docs/diffusion.md:

    python scripts/sampler_validation.py --model oracle --configs oracle \\
        --json docs/results/sampler_validation_oracle.json
    python scripts/sampler_validation.py --model lognormal64 --configs network \\
        --json docs/results/sampler_validation_network.json
    python scripts/sampler_validation.py --table \\
        --json docs/results/sampler_validation_network.json \\
        --oracle-json docs/results/sampler_validation_oracle.json [--per-cosmology unipc:logsnr:50]
    python scripts/sampler_validation.py --figure docs/figures/sampler_validation.png \\
        docs/results/sampler_validation_oracle.json docs/results/sampler_validation_network.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

from diffinfer.diffusion import DiffusionModel, load_model
from diffinfer.diffusion.model import resolve_precision
from diffinfer.diffusion.samplers import DEFAULT_SPACING, SPACINGS, denoiser_calls, grid_points
from diffinfer.io import write_json_atomic
from diffinfer.plots import pyplot, spectra
from diffinfer.simulators import LognormalSimulator
from diffinfer.styles import STYLES

# spread over the prior box (0.1 ... 0.5) x (0.6 ... 1.0); the first is where
# DDPM-1000 is most biased with the exact denoiser (docs/diffusion.md)
COSMOLOGIES = np.array([[0.18, 0.72], [0.13, 0.95], [0.30, 0.80], [0.46, 0.64], [0.42, 0.93]])
CALLS = (10, 20, 50, 100)
# the converged probability-flow ODE from the same starting noise: the paired reference
# that separates a sampler's discretisation error from the model's (and from map noise)
REFERENCE = ("unipc", "logsnr", 200)
CONFIG_SETS = {
    # every sampler at its default spacing, the two multistep ones at every spacing with 20
    # and 50 calls, and DDPM over every timestep
    "oracle": [REFERENCE]
    + [(s, DEFAULT_SPACING[s], c) for s in ("unipc", "dpmpp-2m", "heun", "ddim") for c in CALLS]
    + [
        (s, sp, c)
        for s in ("unipc", "dpmpp-2m")
        for sp in SPACINGS
        for c in (20, 50)
        if sp != DEFAULT_SPACING[s]
    ]
    + [("ddpm", "uniform", 1000)],
    # what the CPU affords for the network (4 s per call on 256 maps, 2-core AMD EPYC), in
    # the order of importance (a stopped run keeps what it finished); the network's error is
    # measured against the oracle's maps of the same configuration and starting noise
    "network": [("unipc", "logsnr", c) for c in (50, 20, 10)]
    + [("dpmpp-2m", "logsnr", 50), ("ddim", "uniform", 50)],
}
SEED_EMULATE, SEED_SIMULATE = 7, 1234


def parse_configs(text: str) -> list[tuple[str, str, int]]:
    """A named set of ``CONFIG_SETS`` or ``sampler:spacing:calls`` entries, comma-separated."""
    if text in CONFIG_SETS:
        return CONFIG_SETS[text]
    out = []
    for item in text.split(","):
        sampler, spacing, calls = item.split(":")
        out.append((sampler, spacing, int(calls)))
    return out


def measure(em: np.ndarray, p_em: np.ndarray, p_sim: np.ndarray, sims: np.ndarray) -> dict:
    """Power and one-point statistics of emulated maps against simulations."""
    ref = p_sim.mean(0)
    r_em, r_sim = (p_em / ref).mean(1), (p_sim / ref).mean(1)
    mean_error = float(r_em.mean() - r_sim.mean())
    floor = float(np.sqrt(r_em.var(ddof=1) / len(r_em) + r_sim.var(ddof=1) / len(r_sim)))
    per_bin = p_em.mean(0) / ref - 1
    d_em, d_sim = em - 1.0, sims - 1.0
    std_em, std_sim = d_em.std(axis=(1, 2)), d_sim.std(axis=(1, 2))
    sk_em = stats.skew(d_em.reshape(len(d_em), -1), axis=1)
    sk_sim = stats.skew(d_sim.reshape(len(d_sim), -1), axis=1)
    return {
        "mean_power_error": mean_error,
        "ratio_per_map": (r_em - r_sim.mean()).tolist(),
        "mean_power_error_se": floor,
        "mean_abs_bin_error": float(np.mean(np.abs(per_bin))),
        "max_abs_bin_error": float(np.max(np.abs(per_bin))),
        "bin_error": per_bin.tolist(),
        "std_ratio": float(std_em.mean() / std_sim.mean()),
        "std_ratio_se": float(
            np.sqrt(std_em.var(ddof=1) / len(std_em) + std_sim.var(ddof=1) / len(std_sim))
            / std_sim.mean()
        ),
        "skewness_diff": float(sk_em.mean() - sk_sim.mean()),
        "skewness_diff_se": float(
            np.sqrt(sk_em.var(ddof=1) / len(sk_em) + sk_sim.var(ddof=1) / len(sk_sim))
        ),
    }


def run(args: argparse.Namespace) -> None:
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(path.read_text()) if path.exists() else {}
    settings = {
        "model": args.model,
        "maps": args.maps,
        "sims": args.sims,
        "seeds": [SEED_EMULATE, SEED_SIMULATE],
        "cosmologies": COSMOLOGIES.tolist(),
    }
    if results and results.get("settings") != settings:
        raise SystemExit(f"{path} holds a run with other settings {results.get('settings')}; "
                         "give another --json")  # fmt: skip
    results["settings"] = settings
    entries = results.setdefault("entries", {})
    model = DiffusionModel.oracle() if args.model == "oracle" else load_model(args.model)
    precision = resolve_precision("cpu", args.precision) if args.model != "oracle" else "fp32"
    results["precision"] = precision
    sim = LognormalSimulator(model.field, model.transform)
    box = model.field.box_size
    configs = parse_configs(args.configs)
    t0 = time.perf_counter()
    cache: dict[int, tuple] = {}
    for sampler, spacing, calls in configs:
        for c, theta in enumerate(COSMOLOGIES):
            key = f"{sampler}|{spacing}|{calls}|{c}"
            if key in entries:
                continue
            if c not in cache:
                sims = sim.simulate(theta, args.sims, seed=SEED_SIMULATE, row_offset=c)
                cache[c] = (sims, *spectra(sims, box))
            sims, k, p_sim = cache[c]
            t1 = time.perf_counter()
            em = model.sample(theta, args.maps, steps=calls, sampler=sampler, spacing=spacing,
                              seed=SEED_EMULATE + c, precision=precision,
                              batch_size=args.batch_size)  # fmt: skip
            _, p_em = spectra(em, box)
            entry = measure(em, p_em, p_sim, sims)
            entry.update(sampler=sampler, spacing=spacing, theta=theta.tolist(), cosmology=c,
                         calls=denoiser_calls(sampler, grid_points(sampler, calls)),
                         seconds=time.perf_counter() - t1)  # fmt: skip
            entries[key] = entry
            results["k"] = k.tolist()
            write_json_atomic(path, results)
            print(f"[{time.perf_counter() - t0:6.0f} s] theta {theta} {sampler:8s} {spacing:9s} "
                  f"{entry['calls']:4d} calls: power {entry['mean_power_error']:+.4f} "
                  f"+- {entry['mean_power_error_se']:.4f}", flush=True)  # fmt: skip


def paired_error(results: dict, entry: dict, reference: dict | None = None) -> tuple:
    """Mean power error of ``entry`` relative to ``reference`` (default: the converged ODE of
    the same model) on the same starting noise: (mean, standard error) of the per-map
    difference. None where the reference is missing."""
    if reference is None:
        ref_key = "|".join(map(str, REFERENCE)) + f"|{entry['cosmology']}"
        reference = results["entries"].get(ref_key)
    if reference is None or reference is entry:
        return None
    d = np.asarray(entry["ratio_per_map"]) - np.asarray(reference["ratio_per_map"])
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def _worst(pairs: list) -> tuple[float | None, float | None]:
    """The (mean, se) of largest |mean| among pairs (None entries skipped)."""
    have = [p for p in pairs if p is not None]
    if not have:
        return None, None
    return max(have, key=lambda p: abs(p[0]))


def summary_rows(results: dict, oracle: dict | None = None) -> list[dict]:
    """One row per configuration: mean and worst over cosmologies; with ``oracle`` (the
    oracle's results on the same starting noise) also the network's own error, paired."""
    groups: dict[tuple, list] = {}
    for key, e in results["entries"].items():
        groups.setdefault((e["sampler"], e["spacing"], e["calls"]), []).append((key, e))
    rows = []
    for (sampler, spacing, calls), kes in sorted(groups.items()):
        es = [e for _, e in kes]
        err = np.array([e["mean_power_error"] for e in es])
        se = np.array([e["mean_power_error_se"] for e in es])
        worst = int(np.argmax(np.abs(err)))
        sampler_worst = _worst([paired_error(results, e) for e in es])
        network_worst = (None, None)
        if oracle is not None:
            network_worst = _worst([
                paired_error(results, e, oracle["entries"][k]) if k in oracle["entries"] else None
                for k, e in kes
            ])  # fmt: skip
        rows.append({
            "sampler": sampler, "spacing": spacing, "calls": calls, "n": len(es),
            "mean": float(err.mean()), "worst": float(err[worst]), "worst_se": float(se[worst]),
            "sampler_worst": sampler_worst[0], "sampler_worst_se": sampler_worst[1],
            "network_worst": network_worst[0], "network_worst_se": network_worst[1],
            "std_ratio": float(np.mean([e["std_ratio"] for e in es])),
            "std_ratio_se": float(np.mean([e["std_ratio_se"] for e in es])),
            "skew": float(np.mean([e["skewness_diff"] for e in es])),
            "skew_se": float(np.mean([e["skewness_diff_se"] for e in es])),
            "within_2pc": bool(len(es) == len(COSMOLOGIES) and np.all(np.abs(err) < 0.02)),
        })  # fmt: skip
    return rows


def _pct(value: float | None, se: float | None) -> str:
    if value is None or se is None:
        return ""
    return (
        f"{100 * value:+.2f} ± {100 * se:.2f} %"
        if se >= 5e-5
        else f"{100 * value:+.2f} % (± <0.01)"
    )


def print_table(path: str, oracle_path: str | None = None) -> None:
    """The markdown table of a results file (paired with the oracle's where given)."""
    results = json.loads(Path(path).read_text())
    oracle = json.loads(Path(oracle_path).read_text()) if oracle_path else None
    s = results["settings"]
    print(f"{path}: model {s['model']} ({results.get('precision', 'fp32')}), {s['maps']} "
          f"emulated and {s['sims']} simulated maps per cosmology, "
          f"{len(s['cosmologies'])} cosmologies")  # fmt: skip
    ref = "-".join(map(str, REFERENCE))
    rows = summary_rows(results, oracle)
    paired = any(r["sampler_worst"] is not None for r in rows)  # the oracle's own file
    head = ["sampler", "spacing", "calls", "cosmologies", "mean power error, mean over "
            "cosmologies", "worst cosmology ± noise floor"]  # fmt: skip
    if paired:
        head.append(f"sampler error (worst), paired against {ref}")
    if oracle is not None:
        head.append("network error (worst), paired against the oracle")
    head += ["delta std ratio", "delta skewness difference", "all within 2 %"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["sampler"], r["spacing"], str(r["calls"]), str(r["n"]),
                 f"{100 * r['mean']:+.2f} %", _pct(r["worst"], r["worst_se"])]  # fmt: skip
        if paired:
            cells.append(_pct(r["sampler_worst"], r["sampler_worst_se"]))
        if oracle is not None:
            cells.append(_pct(r["network_worst"], r["network_worst_se"]))
        cells += [f"{r['std_ratio']:.4f} ± {r['std_ratio_se']:.4f}",
                  f"{r['skew']:+.3f} ± {r['skew_se']:.3f}",
                  "yes" if r["within_2pc"] else "no"]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


def print_cosmologies(path: str, oracle_path: str, config: str) -> None:
    """One configuration per cosmology: the network against simulations, its own error
    (paired against the oracle) and the sampler's (the oracle paired against its converged
    ODE)."""
    network = json.loads(Path(path).read_text())
    oracle = json.loads(Path(oracle_path).read_text())
    print(f"{config.replace(':', ' ')}, {network['settings']['model']}:")
    print("| Ω_m | σ_8 | network against simulations ± noise floor | network's own error, "
          "paired against the oracle | sampler error (oracle, paired against its converged "
          "ODE) | network + sampler | delta std ratio | delta skewness difference |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for c in range(len(COSMOLOGIES)):
        key = "|".join(config.split(":")) + f"|{c}"
        e = network["entries"].get(key)
        if e is None:
            continue
        own = paired_error(network, e, oracle["entries"][key])
        smp = paired_error(oracle, oracle["entries"][key])
        assert own is not None and smp is not None
        total = (own[0] + smp[0], float(np.hypot(own[1], smp[1])))
        print(f"| {e['theta'][0]:.2f} | {e['theta'][1]:.2f} | "
              f"{_pct(e['mean_power_error'], e['mean_power_error_se'])} | {_pct(*own)} | "
              f"{_pct(*smp)} | {_pct(*total)} | {e['std_ratio']:.4f} ± {e['std_ratio_se']:.4f} | "
              f"{e['skewness_diff']:+.3f} ± {e['skewness_diff_se']:.3f} |")  # fmt: skip


def figure(out: str, oracle_path: str, network_path: str | None) -> None:
    """Error against network calls, worst cosmology: the oracle's sampler error (paired against
    the converged ODE) per sampler and spacing; for the network, its error against fresh
    simulations (bars: noise floor) and its own part, paired against the oracle."""
    plt = pyplot()
    panels = 2 if network_path else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.6 * panels, 4.6), squeeze=False,
                             sharey=True, sharex=True)  # fmt: skip
    colours = {"ddim": "#999999", "heun": "#009E73", "dpmpp-2m": "#0072B2",
               "unipc": STYLES["diffusion"].colour, "ddpm": "black"}  # fmt: skip
    markers = dict(zip(SPACINGS, "os^Dv", strict=True))
    oracle = json.loads(Path(oracle_path).read_text())
    ax = axes[0][0]
    rows = summary_rows(oracle)
    for sampler in colours:
        for spacing in SPACINGS:
            rs = [r for r in rows if r["sampler"] == sampler and r["spacing"] == spacing
                  and r["sampler_worst"] is not None]  # fmt: skip
            if not rs:
                continue
            # ancestral sampling does not follow the ODE: against the simulations instead
            value, label = ("worst", f"{sampler} (against simulations)") if sampler == "ddpm" \
                else ("sampler_worst", f"{sampler} ({spacing})")  # fmt: skip
            default = spacing == DEFAULT_SPACING[sampler]
            ax.errorbar([r["calls"] for r in rs], [abs(r[value]) for r in rs],
                        yerr=[r[value + "_se"] for r in rs], color=colours[sampler],
                        marker=markers[spacing], ls="-" if default else ":",
                        lw=1.6 if default else 0.8, ms=5 if default else 3, capsize=2,
                        label=label)  # fmt: skip
    s = oracle["settings"]
    ax.set_title(f"oracle: sampler error, paired against the converged ODE\n{s['maps']} maps "
                 f"at each of {len(s['cosmologies'])} cosmologies", fontsize=9)  # fmt: skip
    ax.legend(fontsize=6.5, ncol=2, loc="upper right")
    if network_path:
        network = json.loads(Path(network_path).read_text())
        ax = axes[0][1]
        rows = summary_rows(network, oracle)
        for sampler in colours:
            rs = [r for r in rows if r["sampler"] == sampler]
            if not rs:
                continue
            calls = [r["calls"] for r in rs]
            ax.errorbar(calls, [abs(r["worst"]) for r in rs], yerr=[r["worst_se"] for r in rs],
                        color=colours[sampler], marker="o", ls="-", capsize=2,
                        label=f"{sampler} ({rs[0]['spacing']}): against simulations")  # fmt: skip
            ax.errorbar(calls, [abs(r["network_worst"]) for r in rs],
                        yerr=[r["network_worst_se"] for r in rs], color=colours[sampler],
                        marker="o", mfc="white", ls="--", capsize=2,
                        label=f"{sampler}: the network's own part")  # fmt: skip
        s = network["settings"]
        ax.set_title(f"network {s['model']}: error against fresh simulations\n{s['maps']} maps "
                     f"at each of {len(s['cosmologies'])} cosmologies", fontsize=9)  # fmt: skip
        ax.legend(fontsize=6.5, loc="upper right")
    for ax in axes[0]:
        ax.axhline(0.02, color="black", lw=0.8, ls="--")
        ax.text(11, 0.021, "2 %", fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("network calls")
    axes[0][0].set_ylabel("worst |mean power error| over cosmologies")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="oracle", help="oracle or a model name/directory")
    sets = " or ".join(CONFIG_SETS)
    parser.add_argument("--configs", default="oracle", help=f"{sets}, or sampler:spacing:calls,...")
    parser.add_argument("--maps", type=int, default=256, help="emulated maps per cosmology")
    parser.add_argument("--sims", type=int, default=1024, help="simulated maps per cosmology")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", default="docs/results/sampler_validation_oracle.json")
    parser.add_argument("--table", action="store_true", help="print the table of --json only")
    parser.add_argument("--oracle-json", help="the oracle's results, to pair the network's with")
    parser.add_argument("--figure", help="draw the figure (oracle JSON [network JSON]) here")
    parser.add_argument(
        "--per-cosmology",
        metavar="SAMPLER:SPACING:CALLS",
        help="with --table and --oracle-json: one configuration per cosmology",
    )
    parser.add_argument("files", nargs="*")
    args = parser.parse_args()
    if args.per_cosmology:
        print_cosmologies(args.json, args.oracle_json, args.per_cosmology)
        return
    if args.figure:
        figure(args.figure, args.files[0], args.files[1] if len(args.files) > 1 else None)
        return
    if not args.table:
        run(args)
    print_table(args.json, args.oracle_json)


if __name__ == "__main__":
    main()
