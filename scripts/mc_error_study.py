"""The posterior's Monte Carlo error estimate against what it estimates, on held-out maps.

    .venv/bin/python scripts/mc_error_study.py --out docs/data/mc_error [--n-maps 30]
        [--omega-max 0.2] [--seeds 0,1,2,3] [--tag corner] [--set max_timesteps=8]
    .venv/bin/python scripts/mc_error_study.py --out docs/data/mc_error --summary

Held-out log-normal maps (cosmologies uniform in the prior box, or with Omega_m below
``--omega-max``; simulator seed 20261206, never used for training, pilots or other studies)
get the public default posterior, ``di.posterior(map, model="lognormal64")``, with the
likelihood seeds ``--seeds`` (0 is what every user gets), and the exact posterior. For each
(map, seed) the result holds every stage of the Monte Carlo error control: the timesteps, the
posterior mean and sd, the estimated Monte Carlo error and the network calls spent, so one
run measures the default before (its first stage, 8 timesteps) and after adding timesteps.
Results are written one file per (map, seed), atomically; a rerun skips what is done.

``--summary`` reads every result under ``--out`` and reports, in units of the exact
posterior's sd: the estimated error of the posterior mean against the seed-to-seed scatter
measured directly (maps with several seeds), and the shift from the exact posterior mean
(seed 0), for the first stage and the final one, with the warnings and the network calls.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

SIM_SEED = 20261206


def held_out(n_maps: int, omega_max: float | None, model):
    """The held-out maps and their cosmologies (deterministic)."""
    from diffinfer.simulators import LognormalSimulator

    sim = LognormalSimulator(model.field, model.transform)
    low, high = np.array(sim.config.prior.low), np.array(sim.config.prior.high)
    if omega_max is not None:
        high[0] = omega_max
    rng = np.random.default_rng(SIM_SEED if omega_max is None else [SIM_SEED, 1])
    theta = low + (high - low) * rng.random((n_maps, 2))
    offset = 0 if omega_max is None else 100_000
    for i, th in enumerate(theta):
        yield i, th, sim.simulate(th, 1, seed=SIM_SEED, row_offset=offset + i)[0]


def run(args: argparse.Namespace) -> None:
    import diffinfer as di
    from diffinfer.inference.mc_control import MonteCarloWarning
    from diffinfer.io import write_json_atomic

    model = di.load_model(args.model)
    options = dict(kv.split("=", 1) for kv in args.set)
    options = {k: json.loads(v) for k, v in options.items()}
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out) / args.tag
    out.mkdir(parents=True, exist_ok=True)
    for i, truth, density in held_out(args.n_maps, args.omega_max, model):
        if i < args.first or (args.maps and i not in args.maps):
            continue
        exact_file = out / f"map{i:03d}-exact.json"
        if not exact_file.exists():
            e = di.posterior(density, model=model, likelihood="exact", progress=False).grid()
            write_json_atomic(exact_file, {"truth": truth.tolist(), "mean": e.mean().tolist(),
                                           "cov": e.cov().tolist()})  # fmt: skip
        for seed in seeds:
            path = out / f"map{i:03d}-seed{seed}.json"
            if path.exists():
                continue
            start = time.perf_counter()
            post = di.posterior(density, model=model, seed=seed, progress=False, **options)
            post.name = f"held-out map {i} ({args.tag})"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", MonteCarloWarning)
                g = post.grid()
            mc = g.mc_error
            write_json_atomic(path, {
                "truth": truth.tolist(), "seed": seed, "options": options,
                "mean": g.mean().tolist(), "cov": g.cov().tolist(),
                "n_evaluations": g.n_evaluations, "seconds": time.perf_counter() - start,
                "warned": any(issubclass(w.category, MonteCarloWarning) for w in caught),
                "mc_error": mc,
            })  # fmt: skip
            print(
                f"map {i} seed {seed}: {mc['n_timesteps']} timesteps, error "
                f"{max(mc['mean']):.2f} sd, {time.perf_counter() - start:.1f} s",
                flush=True,
            )


def summary(args: argparse.Namespace) -> None:
    from diffinfer.io import write_json_atomic

    report = {}
    for tag_dir in sorted(p for p in Path(args.out).iterdir() if p.is_dir()):
        maps: dict[int, dict] = {}
        for f in sorted(tag_dir.glob("map*-seed*.json")):
            i, seed = int(f.name[3:6]), int(f.stem.split("seed")[1])
            maps.setdefault(i, {})[seed] = json.loads(f.read_text())
        exact = {i: json.loads((tag_dir / f"map{i:03d}-exact.json").read_text()) for i in maps}
        report[tag_dir.name] = _summarise(maps, exact)
        paired = _seed_pairs(maps, exact)
        if paired:
            report[tag_dir.name]["final_by_seed"] = paired
        floor = _seed_independent_shift(maps, exact)
        if floor:
            report[tag_dir.name]["seed_independent_shift"] = floor
        print(f"== {tag_dir.name}")
        print(json.dumps(report[tag_dir.name], indent=1))
    # the default against the same maps computed before the lack-of-fit check (tag X-fits)
    for tag in list(report):
        if f"{tag}-fits" in report:
            paired = _against_fits(Path(args.out), tag)
            if paired:
                report[tag]["against_fits"] = paired
                print(f"== {tag} against {tag}-fits, same maps")
                print(json.dumps(paired, indent=1))
    # the first stage (the default's 8 timesteps, the same whatever the later options) over
    # every distinct map with several seeds: tags of one held-out set (corner, corner8,
    # corner-fits: the same maps) pool their seeds, each (map, seed) once
    pooled: dict[tuple[str, int], dict] = {}
    exact_all: dict[tuple[str, int], dict] = {}
    for tag_dir in sorted(p for p in Path(args.out).iterdir() if p.is_dir()):
        held_set = tag_dir.name.split("-")[0].rstrip("0123456789")
        for f in sorted(tag_dir.glob("map*-seed*.json")):
            i, seed = (held_set, int(f.name[3:6])), int(f.stem.split("seed")[1])
            pooled.setdefault(i, {}).setdefault(seed, json.loads(f.read_text()))
            exact_all[i] = json.loads((tag_dir / f"map{i[1]:03d}-exact.json").read_text())
    for key, least in (("pooled_first_stage", 2), ("pooled_first_stage_4_seeds", 4)):
        several = {i: r for i, r in pooled.items() if len(r) >= least}
        if several:
            report[key] = _summarise(several, exact_all)["first"]
            print(f"== pooled, first stage, maps with >= {least} seeds")
            print(json.dumps(report[key], indent=1))
    write_json_atomic(Path(args.out) / "summary.json", report)


def final_shift(result: dict, exact: dict) -> np.ndarray:
    """A result's final-stage posterior mean minus the exact posterior's, in the exact
    posterior's sd, (2,)."""
    mu = np.array(result["mc_error"]["stages"][-1]["posterior_mean"])
    return (mu - np.array(exact["mean"])) / np.sqrt(np.diag(exact["cov"]))


def _against_fits(out: Path, tag: str) -> dict | None:
    """Final-stage shifts from the exact posterior (seed 0) of the maps in both ``tag`` and
    ``tag-fits``: the mean |shift| of each and their paired difference."""
    rows = []
    for f in sorted((out / tag).glob("map*-seed0.json")):
        other = out / f"{tag}-fits" / f.name
        if not other.exists():
            continue
        e = json.loads((out / tag / f"{f.name[:6]}-exact.json").read_text())
        rows.append([final_shift(json.loads(path.read_text()), e) for path in (f, other)])
    if len(rows) < 2:
        return None
    x = np.array(rows)  # (maps, 2: default / fits, 2: parameters)
    n = len(x)
    diff = x[:, 0] - x[:, 1]
    se = diff.std(0, ddof=1) / np.sqrt(n)
    return {"n_maps": n,
            "abs_shift_mean": np.abs(x[:, 0]).mean(0).round(3).tolist(),
            "abs_shift_mean_fits": np.abs(x[:, 1]).mean(0).round(3).tolist(),
            "shift_minus_fits": {"mean": diff.mean(0).round(3).tolist(),
                                 "se": se.round(3).tolist()}}  # fmt: skip


def _seed_independent_shift(maps: dict, exact: dict) -> dict | None:
    """The final stage's shift from the exact posterior split, on the maps with several
    seeds, into what the likelihood seed does not change and what it does.

    Per map, the mean shift over its k seeds m estimates the shift of the posterior with
    no Monte Carlo error (the network's, the bound's and the grid's) up to that error over
    sqrt(k); the scatter over seeds s (k - 1 dof) is the Monte Carlo error itself. Over maps,
    rms of the seed-independent shift = sqrt(mean(m^2 - s^2 / k)) (the Monte Carlo share of
    m removed), against rms of the Monte Carlo error = sqrt(mean(s^2)); mean |m| is the mean
    |shift| that no number of timesteps removes (biased high by the remaining noise)."""
    rows = []
    for i, runs in sorted(maps.items()):
        if len(runs) < 2:
            continue
        x = np.array([final_shift(r, exact[i]) for r in runs.values()])
        rows.append((x.mean(0), x.var(0, ddof=1), len(x)))
    if len(rows) < 2:
        return None
    m = np.array([r[0] for r in rows])
    v = np.array([r[1] for r in rows])
    k = np.array([r[2] for r in rows])[:, None]
    n = len(rows)
    return {"n_maps": n, "seeds_per_map": sorted({int(r[2]) for r in rows}),
            "seed_mean_shift_mean": m.mean(0).round(3).tolist(),
            "seed_mean_shift_se": (m.std(0, ddof=1) / np.sqrt(n)).round(3).tolist(),
            "abs_seed_mean_shift_mean": np.abs(m).mean(0).round(3).tolist(),
            "abs_seed_mean_shift_se": (np.abs(m).std(0, ddof=1) / np.sqrt(n)).round(3).tolist(),
            "seed_independent_rms": np.sqrt(np.maximum(0.0, np.mean(m**2 - v / k, axis=0)))
            .round(3).tolist(),
            "monte_carlo_rms": np.sqrt(v.mean(0)).round(3).tolist()}  # fmt: skip


def _seed_pairs(maps: dict, exact: dict) -> dict | None:
    """The final stage's mean shift from the exact posterior at seed 0 and at seed 1 on the
    maps computed with both, and their paired difference: a shift the seed does not change
    is not Monte Carlo error."""
    both = sorted(i for i, runs in maps.items() if 0 in runs and 1 in runs)
    if len(both) < 2:
        return None
    shifts = {seed: np.array([final_shift(maps[i][seed], exact[i]) for i in both])
              for seed in (0, 1)}  # fmt: skip
    n = len(both)

    def mean_se(x: np.ndarray) -> dict:
        return {"mean": x.mean(0).round(3).tolist(),
                "se": (x.std(0, ddof=1) / np.sqrt(n)).round(3).tolist()}  # fmt: skip

    return {"n_maps": n, "seed0": mean_se(shifts[0]), "seed1": mean_se(shifts[1]),
            "seed1_minus_seed0": mean_se(shifts[1] - shifts[0])}  # fmt: skip


def _lack_of_fit(stage: dict) -> float:
    """A stage's lack of fit in nats (its raw residual where the split was not recorded)."""
    value = stage.get("fit_lack_of_fit_nats", stage.get("fit_residual_nats"))
    return 0.0 if value is None else float(value)


def _summarise(maps: dict, exact: dict) -> dict:
    """Scatter versus estimate and shift versus exact, for the first and the final stage."""
    out: dict = {}
    for stage, pick in (("first", 0), ("final", -1)):
        shift, est, scatter, est_multi, calls, warned, omega = [], [], [], [], [], [], []
        for i, runs in sorted(maps.items()):
            e = exact[i]
            sd_e = np.sqrt(np.diag(e["cov"]))
            means, errs = [], []
            for seed, r in sorted(runs.items()):
                st = r["mc_error"]["stages"][pick]
                mu = np.array(st["posterior_mean"])
                err = np.array(st["mean"]) * np.array(st["posterior_sd"]) / sd_e
                means.append(mu / sd_e)
                errs.append(err)
                if seed == 0:
                    shift.append((mu - np.array(e["mean"])) / sd_e)
                    est.append(err)
                    calls.append(st["n_denoiser_calls"] if pick == 0
                                 else r["mc_error"]["n_denoiser_calls"])  # fmt: skip
                    warned.append(bool(r["warned"]) if pick == -1 else max(st["mean"]) > 0.1)
                    omega.append(e["truth"][0])
            if len(means) >= 2:
                scatter.append(np.std(means, axis=0, ddof=1))
                est_multi.append(np.sqrt(np.mean(np.square(errs), axis=0)))
        s = {}
        if shift:
            shift, est, warned = np.array(shift), np.array(est), np.array(warned)
            big = np.any(np.abs(shift) > 1, axis=1)
            n = len(shift)
            s.update({
                "n_maps": n,
                "shift_mean": shift.mean(0).round(3).tolist(),
                "shift_se": (shift.std(0, ddof=1) / np.sqrt(n)).round(3).tolist(),
                "abs_shift_mean": np.abs(shift).mean(0).round(3).tolist(),
                "abs_shift_se": (np.abs(shift).std(0, ddof=1) / np.sqrt(n)).round(3).tolist(),
                "maps_shift_above_1": int(big.sum()),
                "maps_shift_above_1_unwarned": int((big & ~warned).sum()),
                "maps_warned_or_over_tolerance": int(warned.sum()),
                "estimated_error_rms": np.sqrt(np.mean(est**2, axis=0)).round(3).tolist(),
                # the largest lack of fit of any fitted round (nats: the residual less its
                # Monte Carlo noise; results from before that split give the raw residual;
                # maps without a fit count as 0), the quantity FIT_RESIDUAL_MAX bounds
                "maps_lack_of_fit_above_0.3": int(sum(
                    max([_lack_of_fit(s) for s in r["mc_error"]["stages"]]) > 0.3
                    for runs in maps.values() for seed, r in runs.items() if seed == 0)),
                "maps_refined_on_grid": int(sum(
                    bool(r["mc_error"].get("direct")) for runs in maps.values()
                    for seed, r in runs.items() if seed == 0)),
                "network_calls_median": float(np.median(calls)),
                "network_calls_max": float(np.max(calls)),
            })  # fmt: skip
        if scatter:
            sc, em = np.array(scatter), np.array(est_multi)
            rms_sc, rms_em = np.sqrt(np.mean(sc**2, 0)), np.sqrt(np.mean(em**2, 0))
            # the scatter of k seeds estimates its sd with k - 1 dof: se of the rms from the
            # dof summed over the maps (maps may have different numbers of seeds)
            seeds = [len(runs) for runs in maps.values() if len(runs) >= 2]
            dof = sum(k - 1 for k in seeds)
            s.update({
                "seed_scatter_maps": len(sc), "seeds_per_map": sorted(set(seeds)),
                "seed_scatter_rms": rms_sc.round(3).tolist(),
                "estimated_error_rms_same_maps": rms_em.round(3).tolist(),
                "ratio_estimate_to_scatter": (rms_em / rms_sc).round(2).tolist(),
                "ratio_se": (rms_em / rms_sc / np.sqrt(2 * dof)).round(2).tolist(),
            })  # fmt: skip
        out[stage] = s
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/data/mc_error")
    parser.add_argument("--model", default="lognormal64")
    parser.add_argument("--n-maps", type=int, default=30)
    parser.add_argument("--first", type=int, default=0, help="start at this map (another worker)")
    parser.add_argument("--maps", type=lambda s: {int(i) for i in s.split(",")}, default=None,
                        help="only these held-out maps, e.g. 2,45,65")  # fmt: skip
    parser.add_argument("--omega-max", type=float, help="held-out maps with Omega_m below this")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--tag", default="all", help="subfolder of --out for this set of maps")
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=JSON",
                        help="a posterior option, e.g. max_timesteps=8")  # fmt: skip
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    summary(args) if args.summary else run(args)


if __name__ == "__main__":
    main()
