"""The ``diffinfer`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from diffinfer.errors import DataFileError, DiffinferError
from diffinfer.parameters import PARAM_NAMES


def _add_geometry(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("map geometry (default: the reference configuration)")
    g.add_argument("--n-pix", type=int, default=64, help="pixels per map side N (default 64)")
    g.add_argument(
        "--box-size", type=float, default=500.0, help="map side L in Mpc/h (default 500)"
    )
    g.add_argument("--depth", type=float, default=50.0, help="slab depth d in Mpc/h (default 50)")


def _config(args: argparse.Namespace):
    from diffinfer.fields import FieldConfig

    return FieldConfig(n_pix=args.n_pix, box_size=args.box_size, depth=args.depth)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from diffinfer.data import write_synthetic_dataset

    path = write_synthetic_dataset(
        args.out,
        n_cosmologies=args.n_cosmologies,
        maps_per_cosmology=args.maps_per_cosmology,
        config=_config(args),
        seed=args.seed,
        set_name=args.set,
        progress=not args.no_progress,
    )
    print(f"wrote {path} and its parameter file")
    return 0


def _cmd_estimate(args: argparse.Namespace) -> int:
    from diffinfer.fields import LognormalSimulator
    from diffinfer.fields.grid import as_maps

    sim = LognormalSimulator(_config(args))
    truth = None
    if args.map is not None:
        try:
            density = np.load(args.map, allow_pickle=False)
        except (ValueError, EOFError) as exc:
            raise DataFileError(
                f"cannot read map {args.map}: {exc}; expected an N x N .npy array"
            ) from exc
        density = as_maps(density, n_pix=args.n_pix, positive=True, what=f"map {args.map}")
        source = f"map {args.map}"
    else:
        truth = np.array([args.omega_m, args.sigma_8])
        density = sim.simulate(truth, 1, seed=args.seed)[0]
        source = f"simulated log-normal map (seed {args.seed})"
    y = sim.transform.forward(density)
    fit = sim.maximum_likelihood(y)
    c = sim.config
    print(f"diffinfer estimate: {source}")
    print(f"  {c.n_pix}^2 pixels, L = {c.box_size:g} Mpc/h, slab depth d = {c.depth:g} Mpc/h")
    print("  exact log-normal likelihood, maximum-likelihood estimate +- Fisher error")
    header = f"  {'parameter':<10} {'estimate':>9} {'error':>8}"
    if truth is not None:
        header += f" {'truth':>8} {'pull':>6}"
    print(header)
    for j, name in enumerate(PARAM_NAMES):
        est, err = fit.theta[0, j], fit.std[0, j]
        line = f"  {name:<10} {est:9.4f} {err:8.4f}"
        if truth is not None:
            line += f" {truth[j]:8.4f} {(est - truth[j]) / err:6.2f}"
        print(line)
    corr = fit.cov[0, 0, 1] / (fit.std[0, 0] * fit.std[0, 1])
    print(f"  correlation {corr:.3f}; converged: {bool(fit.converged[0])} in {fit.n_iter} steps")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from diffinfer.train import load_config, parse_override, train

    overrides = [parse_override(o) for o in args.set]
    for key, value in (
        ("out", args.out),
        ("init_from", args.init_from),
        ("train.steps", args.steps),
        ("train.device", args.device),
        ("train.precision", args.precision),
        ("train.max_minutes", args.max_minutes),
        ("data.root", args.data),
    ):
        if value is not None:
            overrides.append(parse_override(f"{key}={value}"))
    config = load_config(args.config, overrides)
    result = train(config, resume=args.resume, progress=not args.no_progress)
    state = "done"
    if result["stopped_early"]:
        state = "stopped at its time limit (resume with --resume)"
    print(f"training {state} at step {result['step']}; EMA model in {result['model_dir']}")
    return 0


def _cmd_emulate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffinfer.diffusion import load_model
    from diffinfer.fields import LognormalSimulator
    from diffinfer.plots import emulation_figure

    model = load_model(args.model, device=args.device)
    theta = np.array([args.omega_m, args.sigma_8])
    maps = model.sample(
        theta,
        args.n,
        steps=args.steps,
        sampler=args.sampler,
        seed=args.seed,
        precision=args.precision,
        progress=not args.no_progress,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "maps.partial.npy"
    np.save(tmp, maps.astype(np.float32))
    tmp.replace(out / "maps.npy")
    simulated = None
    if model.is_oracle or model.card.get("data", {}).get("simulator") == "lognormal":
        sim = LognormalSimulator(model.field, model.transform)
        simulated = sim.simulate(theta, max(args.n, 64), seed=args.seed + 1)
    steps = args.steps or (model.schedule.n_steps if args.sampler == "ddpm" else 50)
    fig = emulation_figure(
        maps,
        theta,
        model.field,
        out / "emulate.png",
        simulated=simulated,
        title=(
            f"{model.card.get('name', args.model)}: {args.sampler.upper()} {steps} steps, "
            rf"$\Omega_m$ = {theta[0]:.3f}, $\sigma_8$ = {theta[1]:.3f}"
        ),
    )
    print(f"wrote {len(maps)} maps to {out / 'maps.npy'} and the figure {fig}")
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from diffinfer.io import write_json_atomic, write_text_atomic
    from diffinfer.plots import triangle
    from diffinfer.posterior import posterior

    try:
        density = np.load(args.map, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise DataFileError(f"cannot read map {args.map}: {exc}; expected an N x N .npy") from exc
    from diffinfer.diffusion import load_model

    model = None if args.model == "none" else load_model(args.model, device=args.device)
    options = {"precision": args.precision}
    if args.n_timesteps is not None:
        options["n_timesteps"] = args.n_timesteps or None
    likelihood = _parse_likelihood(args.likelihood)
    if likelihood in ("exact", "power"):
        options = {}
    runs = [(likelihood, options)]
    if args.reference != "none":
        runs.append((args.reference, {}))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = f"  {'parameter':<10} {'mean':>8} {'std':>8} {'16%':>8} {'84%':>8}"
    lines = [f"diffinfer infer: {args.map}"]
    all_samples, reports = [], []
    for k, (likelihood, opts) in enumerate(runs):
        start = time.perf_counter()
        post = posterior(density, model=model, likelihood=likelihood, method=args.method,
                         seed=args.seed, **opts)  # fmt: skip
        samples = post.sample(args.n_samples)
        summary = post.summary()
        seconds = time.perf_counter() - start
        name = "samples.npz" if k == 0 else f"samples_{likelihood}.npz"
        samples.save(out / name)
        theta_map = dict(zip(PARAM_NAMES, map(float, post.map()), strict=True))
        reports.append({**samples.info, "summary": summary, "map_estimate": theta_map,
                        "seconds": seconds})  # fmt: skip
        all_samples.append(samples)
        diag = samples.info.get("diagnostics", {})
        how = f"method {args.method}"
        if args.method == "grid":
            how = f"grid {diag.get('strategy', 'adaptive')}"
            if diag.get("fallback"):
                how += f" (not aligned: {diag['fallback']})"
        lines += [
            f"  {samples.info['likelihood']}; {how}; prior {samples.info['prior']}; "
            f"{diag.get('n_evaluations', post.n_evaluations)} likelihood evaluations; "
            f"{seconds:.1f} s",
            header + (f" {'truth':>8}" if args.truth else ""),
        ]
        for j, pname in enumerate(PARAM_NAMES):
            e = summary[pname]
            line = f"  {pname:<10} {e['mean']:8.4f} {e['std']:8.4f} {e['q16']:8.4f} {e['q84']:8.4f}"
            lines.append(line + (f" {args.truth[j]:8.4f}" if args.truth else ""))
    text = "\n".join(lines) + "\n"
    report = {"map": str(args.map), **reports[0]}
    if len(reports) > 1:
        report["reference"] = reports[1]
    if args.truth:
        report["truth"] = dict(zip(PARAM_NAMES, args.truth, strict=True))
    write_text_atomic(out / "summary.txt", text)
    write_json_atomic(out / "summary.json", report)
    if args.method != "grid":
        import arviz as az

        write_text_atomic(
            out / "diagnostics.txt", az.summary(all_samples[0].to_arviz()).to_string() + "\n"
        )
    labels = [s.info["likelihood"].split(" (")[0] for s in all_samples]
    triangle(all_samples, out / "triangle.png", labels=labels,
             truth=None if not args.truth else np.array(args.truth))  # fmt: skip
    print(text, end="")
    print(f"  wrote samples, summary.txt/json, triangle.png in {out}")
    return 0


def _parse_likelihood(text: str) -> str | list[int]:
    if text in ("l0", "vlb", "exact", "power"):
        return text
    try:
        return [int(i) for i in text.split(",")]
    except ValueError as exc:
        raise DiffinferError(
            f"--likelihood must be l0, vlb, exact, power or term indices like 0,1,2; got {text!r}"
        ) from exc


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from diffinfer.calibration.study import StudyConfig, run_study
    from diffinfer.train import parse_override

    options = {}
    for item in args.set or []:
        options.update(parse_override(item))
    if args.n_timesteps is not None:
        options["n_timesteps"] = args.n_timesteps or None
    config = StudyConfig(
        model=args.model, likelihood=_parse_likelihood(args.likelihood),
        analyses=args.analyses.split(","), n_maps=args.n_maps, method=args.method,
        data=args.data, split=args.split, seed=args.seed, n_draws=args.n_draws,
        temperature=args.temperature, noise_sigma=args.noise_sigma, options=options,
    )  # fmt: skip
    report = run_study(config, args.out, workers=args.workers, scheduler=args.scheduler,
                       threads=args.threads, progress=not args.no_progress)  # fmt: skip
    print(_report_table(report))
    print(f"  report.json and figures/ in {args.out}")
    return 0


def _report_table(report: dict) -> str:
    lines = [
        f"  {'analysis':<10} {'maps':>5} {'HPD dev':>8} {'TARP dev':>9} "
        f"{'z mean Om':>9} {'z sd Om':>8} {'z mean s8':>9} {'z sd s8':>8} calibrated"
    ]
    for a, r in report["analyses"].items():
        z = list(r["z_score"].values())
        lines.append(
            f"  {a:<10} {r['n_maps']:5d} {r['hpd_coverage']['max_deviation']:8.3f} "
            f"{r['tarp']['max_deviation']:9.3f} {z[0]['mean']:9.2f} {z[0]['std']:8.2f} "
            f"{z[1]['mean']:9.2f} {z[1]['std']:8.2f} {'yes' if r['calibrated'] else 'NO'}"
        )
    return "\n".join(lines)


def _cmd_recalibrate(args: argparse.Namespace) -> int:
    from diffinfer.calibration.study import fit_temperature, load_results, store_temperature
    from diffinfer.io import read_json

    study = read_json(f"{args.study}/study.json")
    results = load_results(args.study, "diffusion")
    fit = fit_temperature(results)
    print(f"likelihood temperature {fit['temperature']:.3f} +- {fit['se']:.3f} "
          f"from {fit['n_maps']} maps of {args.study}")  # fmt: skip
    if args.store:
        first = results[0]
        if len({(str(r["terms"]), int(r["n_noise"])) for r in results}) != 1:
            raise DiffinferError(f"{args.study} mixes likelihood term sets; fit one at a time")
        if study.get("split") != "validation" and study.get("data"):
            print("warning: fitting on the test split; report coverage on other maps")
        path = store_temperature(study["model"], fit, str(first["terms"]), int(first["n_noise"]),
                                 noise_sigma=float(study.get("noise_sigma", 0.0)))  # fmt: skip
        print(f"stored in {path}; posterior() applies it to this term set by default")
    return 0


def _cmd_fit_proposal(args: argparse.Namespace) -> int:
    import time

    from diffinfer.calibration.study import StudyConfig, _model, test_case
    from diffinfer.diffusion.checkpoint import update_card
    from diffinfer.proposal import fit_timestep_proposal, proposal_quantiles

    if args.n_maps < 2:
        raise DiffinferError(f"--n-maps must be at least 2, got {args.n_maps}")
    config = StudyConfig(model=args.model, data=args.data, split="validation", seed=args.seed,
                         analyses=["diffusion"])  # fmt: skip
    model = _model(args.model)
    if args.store and model.is_oracle:
        raise DiffinferError("the oracle has no model card to store a proposal in")
    start = time.perf_counter()
    fields = [test_case(config, i)[0] for i in range(args.n_maps)]
    fit = fit_timestep_proposal(model, fields, seed=args.seed, smooth=args.smooth,
                                floor=args.floor, progress=not args.no_progress)  # fmt: skip
    fit["source"] = (f"diffinfer fit-proposal --model {args.model} --data {args.data} "
                     f"--n-maps {args.n_maps} --seed {args.seed} (validation split)")  # fmt: skip
    print(f"fitted on {args.n_maps} pilot maps in {time.perf_counter() - start:.0f} s")
    print(f"5/25/50/75/95 % of the proposal below t = {proposal_quantiles(fit['q'])}")
    print(f"Monte Carlo variance of log L differences per timestep: "
          f"{fit['variance_ratio']:.2f} x the default proposal's (pilot maps)")  # fmt: skip
    if args.store:
        likelihood = dict(model.card.get("likelihood") or {})
        likelihood["timestep_proposal"] = fit
        path = update_card(args.model, {"likelihood": likelihood})
        print(f"stored in {path}; the VLB likelihood of this model uses it by default")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``diffinfer`` command."""
    parser = argparse.ArgumentParser(
        prog="diffinfer",
        description="Cosmological inference with diffusion models on matter-density maps.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "simulate",
        help="write a synthetic log-normal data set in the CAMELS CMD format",
        description=(
            "Simulate log-normal density maps on a Latin hypercube over the prior box and "
            "write Maps_Mtot_Lognormal_<set>_z=0.00.npy, params_<set>_Lognormal.txt and "
            "dataset.json into OUT."
        ),
    )
    p.add_argument("--out", required=True, help="output directory (created if needed)")
    p.add_argument(
        "--n-cosmologies", type=int, default=1000, help="Latin-hypercube points (default 1000)"
    )
    p.add_argument(
        "--maps-per-cosmology", type=int, default=15, help="maps per cosmology (default 15)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of parameters and maps (default 0)")
    p.add_argument("--set", default="LH", help="CMD set name in the file names (default LH)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_geometry(p)
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser(
        "estimate",
        help="estimate (Omega_m, sigma_8) of one map with the exact log-normal likelihood",
        description=(
            "Simulate a log-normal map at (--omega-m, --sigma-8), or read one with --map, "
            "and print the maximum-likelihood parameters with their Fisher errors."
        ),
    )
    p.add_argument("--map", help="a density map (N x N .npy, positive, mean about 1) to analyse")
    p.add_argument("--omega-m", type=float, default=0.3, help="true Omega_m of the simulated map")
    p.add_argument("--sigma-8", type=float, default=0.8, help="true sigma_8 of the simulated map")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated map (default 0)")
    _add_geometry(p)
    p.set_defaults(func=_cmd_estimate)

    p = sub.add_parser(
        "train",
        help="train a conditional diffusion model (config file; resumable; DDP via torchrun)",
        description=(
            "Train a diffusion model as described by --config (YAML; see docs/training.md). "
            "Options below override the file; --set section.key=value overrides any key. "
            "For several processes: torchrun --nproc_per_node W -m diffinfer train ..."
        ),
    )
    p.add_argument("--config", help="YAML configuration (default: built-in defaults)")
    p.add_argument("--data", help="data directory (data.root)")
    p.add_argument("--out", help="run directory (out)")
    p.add_argument("--steps", type=int, help="total optimiser steps (train.steps)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (train.device)")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="train.precision")
    p.add_argument("--max-minutes", type=float, help="stop with a checkpoint after this time")
    p.add_argument("--init-from", help="model directory or name whose weights start the run")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "emulate",
        help="emulate maps at one cosmology with a trained model",
        description=(
            "Sample maps from a diffusion model at (--omega-m, --sigma-8); write OUT/maps.npy "
            "(densities, float32) and OUT/emulate.png (maps and power spectra, against the "
            "simulator's for log-normal models)."
        ),
    )
    p.add_argument(
        "--model", default="lognormal64", help="model name or directory; 'oracle' for the exact one"
    )
    p.add_argument("--omega-m", type=float, default=0.3, help="Omega_m (default 0.3)")
    p.add_argument("--sigma-8", type=float, default=0.8, help="sigma_8 (default 0.8)")
    p.add_argument("--n", type=int, default=16, help="maps to emulate (default 16)")
    p.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm")
    p.add_argument("--steps", type=int, help="denoiser calls (default: T for ddpm, 50 for ddim)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_emulate)

    p = sub.add_parser(
        "infer",
        help="posterior of (Omega_m, sigma_8) for one map",
        description=(
            "Compute the posterior of one density map (N x N .npy) with a diffusion model or "
            "the exact log-normal likelihood; write samples, a summary (text and JSON), "
            "diagnostics and a GetDist triangle plot into --out."
        ),
    )
    p.add_argument("map", help="density map, .npy")
    p.add_argument(
        "--model",
        default="lognormal64",
        help="model name or directory, 'oracle', or 'none' (exact likelihood only)",
    )
    p.add_argument(
        "--likelihood",
        default="vlb",
        help="vlb (default), l0, comma-separated term indices, exact, or power",
    )
    p.add_argument("--n-timesteps", type=int,
                   help="sampled timesteps for vlb (default: DEFAULT_VLB_TIMESTEPS; 0: every "
                        "term)")  # fmt: skip
    p.add_argument("--method", choices=("grid", "emcee", "nuts"), default="grid")
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="auto",
                   help="network precision of the diffusion likelihood (auto: bf16 where "
                        "the device computes it natively)")  # fmt: skip
    p.add_argument("--reference", choices=("none", "exact", "power"), default="none",
                   help="also compute this reference posterior and show it alongside")  # fmt: skip
    p.add_argument("--n-samples", type=int, default=4000, help="posterior draws (default 4000)")
    p.add_argument(
        "--truth", type=float, nargs=2, metavar=("OMEGA_M", "SIGMA_8"), help="mark a known theta"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_cmd_infer)

    p = sub.add_parser(
        "calibrate",
        help="coverage study: posteriors of many test maps, calibration metrics and figures",
        description=(
            "Compute the posterior of --n-maps test maps under the diffusion likelihood and "
            "the references (exact, power spectrum); write one result per map as it "
            "finishes (a killed run resumes), then report.json and figures/ in --out. "
            "See docs/calibration.md."
        ),
    )
    p.add_argument("--model", default="lognormal64", help="model name or directory, or 'oracle'")
    p.add_argument("--likelihood", default="vlb", help="diffusion terms: vlb, l0 or 0,1,2")
    p.add_argument("--n-timesteps", type=int,
                   help="sampled timesteps for vlb (default: DEFAULT_VLB_TIMESTEPS; 0: every "
                        "term)")  # fmt: skip
    p.add_argument("--analyses", default="diffusion,exact,power",
                   help="comma-separated: diffusion, exact, power (default all)")  # fmt: skip
    p.add_argument("--method", choices=("grid", "emcee", "nuts"), default="grid")
    p.add_argument("--n-maps", type=int, default=200, help="test maps (default 200)")
    p.add_argument("--data", help="CAMELS-format data directory (default: simulate maps)")
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="held-out split of --data (validation: a calibration split)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seeds cosmologies, maps and posteriors")
    p.add_argument("--n-draws", type=int, default=1000, help="posterior draws kept per map")
    p.add_argument("--temperature", type=float,
                   help="diffusion likelihood temperature (default: the card's)")  # fmt: skip
    p.add_argument("--noise-sigma", type=float, default=0.0,
                   help="Gaussian pixel noise (model space) added and modelled")  # fmt: skip
    p.add_argument("--set", action="append", metavar="OPTION=VALUE",
                   help="posterior option, e.g. n_coarse=16 (repeatable)")  # fmt: skip
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per task (default 1)")
    p.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://10.0.0.1:8786")
    p.add_argument("--out", required=True, help="study directory (resumed if it exists)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser(
        "recalibrate",
        help="fit a likelihood temperature on a calibration study; optionally store it",
        description=(
            "Fit the likelihood temperature that makes the diffusion posteriors of STUDY "
            "calibrated (mean squared Mahalanobis distance of the truth over the number of "
            "parameters); with --store, record it in the study's model card, where "
            "posterior() applies it to the same term set by default."
        ),
    )
    p.add_argument("study", help="a study directory written by `diffinfer calibrate`")
    p.add_argument("--store", action="store_true", help="write the temperature to the model card")
    p.set_defaults(func=_cmd_recalibrate)

    p = sub.add_parser(
        "fit-proposal",
        help="fit the VLB timestep proposal of a model on pilot maps; optionally store it",
        description=(
            "Measure, on pilot maps of the calibration (validation) split, how much each "
            "timestep's term changes across the model's own posterior, and fit the "
            "importance-sampling proposal of the VLB likelihood to it (diffinfer.proposal); "
            "with --store, record it in the model card, where the likelihood uses it."
        ),
    )
    p.add_argument("--model", required=True, help="model name or directory (or 'oracle')")
    p.add_argument("--data", help="CAMELS-format data set (default: fresh simulations)")
    p.add_argument("--n-maps", type=int, default=16, help="pilot maps (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smooth", type=float, default=10.0, help="smoothing width in timesteps")
    p.add_argument("--floor", type=float, default=0.1, help="weight of the default proposal")
    p.add_argument("--store", action="store_true", help="write the proposal to the model card")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_fit_proposal)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (DiffinferError, FileNotFoundError) as exc:
        print(f"diffinfer: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
