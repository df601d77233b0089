"""The ``diffinfer`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffinfer.diffusion.model import DEFAULT_SAMPLER, DEFAULT_STEPS, default_steps
from diffinfer.diffusion.samplers import (
    DEFAULT_SPACING,
    SAMPLERS,
    SPACINGS,
    denoiser_calls,
    grid_points,
)
from diffinfer.errors import DataFileError, DiffinferError, InputError
from diffinfer.fields.grid import FIELD_KINDS
from diffinfer.parameters import DERIVED_NAMES, PARAM_NAMES, derived
from diffinfer.posterior import REFERENCE_LIKELIHOODS
from diffinfer.validation import check_int


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

    if args.simulator == "nbody":
        from diffinfer.data.nbody import NBodyConfig

        if args.depth is not None:
            raise InputError("--depth is set by the N-body slabs (box size / --slabs); leave "
                             "it out with --simulator nbody")  # fmt: skip
        defaults = NBodyConfig()
        particles = args.particles or defaults.n_particles
        config = NBodyConfig(
            n_particles=particles,
            mesh=args.mesh or particles,
            box_size=defaults.box_size if args.box_size is None else args.box_size,
            n_steps=args.steps, a_initial=args.a_initial, n_slabs=args.slabs,
            n_pix=args.n_pix, refine=args.refine,
        )  # fmt: skip
    else:
        nbody_only = [f"--{name.replace('_', '-')}" for name in ("particles", "mesh")
                      if getattr(args, name) is not None]  # fmt: skip
        if nbody_only:
            raise InputError(f"{', '.join(nbody_only)} only apply to --simulator nbody")
        args.box_size = 500.0 if args.box_size is None else args.box_size
        args.depth = 50.0 if args.depth is None else args.depth
        config = _config(args)
    path = write_synthetic_dataset(
        args.out,
        simulator=args.simulator,
        n_cosmologies=args.n_cosmologies,
        maps_per_cosmology=args.maps_per_cosmology,
        config=config,
        seed=args.seed,
        set_name=args.set,
        progress=not args.no_progress,
    )
    print(f"wrote {path} and its parameter file")
    return 0


def _cmd_estimate(args: argparse.Namespace) -> int:
    from diffinfer.fields import LognormalSimulator
    from diffinfer.fields.grid import as_density
    from diffinfer.parameters import as_theta

    sim = LognormalSimulator(_config(args))
    truth = None
    if args.map is not None and args.map_option is not None:
        raise InputError("give the map once: as the positional MAP (--map is its old name)")
    args.map = args.map if args.map is not None else args.map_option
    if args.map is not None:
        density = as_density(_read_map(args.map, args.index, args.downsample), kind=args.kind,
                             n_pix=args.n_pix, what=f"map {args.map}")  # fmt: skip
        source = f"map {args.map}"
    else:
        check_int("--seed", args.seed, low=0)
        truth = np.array([args.omega_m, args.sigma_8])
        as_theta(truth, sim.config.prior)
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
    if not bool(c.prior.contains(fit.theta[0])):
        print(f"  note: the estimate lies outside the prior box {c.prior.to_dict()}, where the "
              "simulator's spectrum is an extrapolation; use `diffinfer infer` for the "
              "posterior within the prior")  # fmt: skip
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
        if value is not None:  # typed by argparse: not re-read as YAML ("--out 2024")
            for part in reversed(key.split(".")):
                value = {part: value}
            overrides.append(value)
    config = load_config(args.config, overrides)
    result = train(config, resume=args.resume, progress=not args.no_progress)
    state = "done"
    if result["stopped_early"]:
        state = "stopped at its time limit (resume with --resume)"
    print(f"training {state} at step {result['step']}; EMA model in {result['model_dir']}")
    return 0


def _cmd_emulate(args: argparse.Namespace) -> int:
    import os
    import shutil
    from pathlib import Path

    from diffinfer.diffusion import load_model
    from diffinfer.fields import LognormalSimulator
    from diffinfer.plots import emulation_figure
    from diffinfer.validation import check_device, check_float

    # Every input is checked before sampling starts; --out is created (and test-written)
    # only after all the other checks pass, so a bad call leaves nothing behind.
    n = check_int("--n", args.n, low=1, what="maps to emulate")
    if args.steps is not None:
        check_int("--steps", args.steps, low=1, what="denoiser calls")
    seed = check_int("--seed", args.seed, low=0)
    sampler, precision = args.sampler, args.precision  # argparse's choices checked them
    device = check_device("--device", args.device)
    model = load_model(args.model, device=device)
    # theta against the model's prior box (this also refuses NaN and inf)
    prior = model.field.prior
    given = (("--omega-m", args.omega_m), ("--sigma-8", args.sigma_8))
    theta = np.array(
        [
            check_float(name, value, low=lo, high=hi, what="the model's prior box")
            for (name, value), lo, hi in zip(given, prior.low, prior.high, strict=True)
        ]
    )
    T = model.schedule.n_steps
    steps = args.steps if args.steps is not None else default_steps(sampler, T)
    steps = check_int("--steps", steps, low=1, high=T, what=f"the model has T = {T} steps")
    spacing = args.spacing or DEFAULT_SPACING[sampler]
    n_pix = model.field.n_pix
    need = n * n_pix**2 * 12  # float64 maps and their float32 copy
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        memory = None
    if memory and need > 0.8 * memory:
        raise InputError(
            f"--n {n} maps of {n_pix}^2 pixels need {need / 2**30:.1f} GiB, more than this "
            f"machine's memory ({memory / 2**30:.1f} GiB): emulate fewer maps per call"
        )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DataFileError(f"--out {args.out} exists and is not a directory; choose another path")
    # the topmost directory this call creates, removed again if anything fails
    created = None
    if not out.exists():
        created = next((p for p in [out, *out.parents] if p.parent.exists()), out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".diffinfer-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        if created is not None and created.is_dir():
            shutil.rmtree(created, ignore_errors=True)
        raise DataFileError(
            f"--out {args.out} cannot be created or written ({exc.strerror or exc}); "
            "choose another directory"
        ) from exc
    try:
        maps = model.sample(
            theta,
            n,
            steps=steps,
            sampler=sampler,
            spacing=spacing,
            seed=seed,
            precision=precision,
            progress=not args.no_progress,
        )
    except BaseException:
        if created is not None and not any(out.iterdir()):
            shutil.rmtree(created, ignore_errors=True)  # nothing written yet: leave nothing
        raise
    tmp = out / "maps.partial.npy"
    np.save(tmp, maps.astype(np.float32))
    tmp.replace(out / "maps.npy")
    simulated = None
    if model.is_oracle or model.card.get("data", {}).get("simulator") == "lognormal":
        sim = LognormalSimulator(model.field, model.transform)
        simulated = sim.simulate(theta, max(n, 64), seed=seed + 1)
    fig = emulation_figure(
        maps,
        theta,
        model.field,
        out / "emulate.png",
        simulated=simulated,
        title=(
            f"{model.card.get('name', args.model)}: {sampler} ({spacing}), "
            f"{denoiser_calls(sampler, grid_points(sampler, steps))} calls, "
            rf"$\Omega_m$ = {theta[0]:.3f}, $\sigma_8$ = {theta[1]:.3f}"
        ),
    )
    print(f"wrote {len(maps)} maps to {out / 'maps.npy'} and the figure {fig}")
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    import time

    import torch

    from diffinfer.io import write_json_atomic, write_text_atomic
    from diffinfer.plots import triangle
    from diffinfer.posterior import SAMPLER_OPTIONS, posterior
    from diffinfer.validation import check_device

    density = [_read_map(m, args.index, args.downsample) for m in args.map]
    density = density[0] if len(density) == 1 else density
    where = " ".join(args.map) + ("" if args.index is None else f" [{args.index}]")
    check_int("--n-samples", args.n_samples, low=1)
    check_int("--seed", args.seed, low=0)
    if args.threads is not None:
        check_int("--threads", args.threads, low=1)
    check_device("--device", args.device)
    likelihood = _parse_likelihood(args.likelihood)
    set_options = _parse_set(args.set)
    from diffinfer.diffusion import load_model

    model = None if args.model == "none" else load_model(args.model, device=args.device)
    options = {"precision": args.precision}
    if args.n_timesteps is not None:
        check_int("--n-timesteps", args.n_timesteps, low=0)
        options["n_timesteps"] = args.n_timesteps or None
    if likelihood in REFERENCE_LIKELIHOODS:
        options = {}
    if args.temperature is not None:  # posterior() checks it
        options["temperature"] = args.temperature
    sampler_names = set(SAMPLER_OPTIONS[args.method])  # argparse checked the method
    # --set npe=DIR names the NPE reference, of whichever run is an NPE one
    npe_runs = [like for like in (likelihood, args.reference)
                if isinstance(like, str) and like.startswith("npe")]  # fmt: skip
    if "npe" in set_options and not npe_runs:
        raise InputError("--set npe=... names an NPE reference: use it with --likelihood npe "
                         "or --reference npe (or npe-power)")  # fmt: skip
    main_options = {k: v for k, v in set_options.items()
                    if k != "npe" or likelihood in npe_runs}  # fmt: skip
    runs = [(likelihood, {**options, **main_options})]
    if args.reference != "none":  # the reference takes the sampler's options and its own
        own = {"npe"} if args.reference in npe_runs else set()
        own |= {"spectrum"} if args.reference == "power" else set()
        runs.append((args.reference, {k: v for k, v in set_options.items()
                                      if k in sampler_names or k in own}))  # fmt: skip
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # every input is checked (map, options, truth) before anything is computed or written
    posts = [posterior(density, model=model, likelihood=like, method=args.method,
                       seed=args.seed, kind=args.kind, progress=not args.no_progress, **opts)
             for like, opts in runs]  # fmt: skip
    for post in posts:
        post.name = where
    if args.truth:
        from diffinfer.parameters import as_theta

        try:
            as_theta(np.array(args.truth), posts[0].prior.box)
        except InputError as exc:
            raise InputError(f"--truth: {exc}") from exc
    out = _output_dir(args.out)
    header = f"  {'parameter':<10} {'mean':>8} {'std':>8} {'16%':>8} {'84%':>8}"
    lines = [f"diffinfer infer: {' '.join(args.map)}"]
    all_samples, reports = [], []
    for k, ((likelihood, _), post) in enumerate(zip(runs, posts, strict=True)):
        start = time.perf_counter()
        samples = post.sample(args.n_samples)
        summary = post.summary()
        gof = post.goodness_of_fit()
        samples.info["diagnostics"]["goodness_of_fit"] = gof
        seconds = time.perf_counter() - start
        name = "samples.npz" if k == 0 else f"samples_{likelihood}.npz"
        if args.truth:
            samples.truth = np.array(args.truth, dtype=float)
        samples.save(out / name)
        # GetDist chain files beside the npz (getdist.loadMCSamples, GetDist's GUI)
        samples.save(out / "chains" / Path(name).stem, format="getdist")
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
        ]
        mc = diag.get("mc_error")
        if mc is not None and mc.get("stochastic"):
            lines.append(
                f"  Monte Carlo error of the likelihood: mean {mc['mean'][0]:.2f} / "
                f"{mc['mean'][1]:.2f} sd, sd {mc['sd'][0]:.0%} / {mc['sd'][1]:.0%} "
                f"({mc['n_timesteps']} timesteps, {mc['n_denoiser_calls']} network calls"
                + ("" if mc["met"] else f"; above mc_tol={mc['tolerance']:g}") + ")"
            )
        if gof["available"]:
            lines.append(f"  goodness of fit: posterior predictive p = {gof['p_value']:.3g} "
                         f"(P(k) and one-point PDF against {gof['n_sims']} simulated maps"
                         + ("; below 0.05: the map is unlike the model's)"
                            if gof["p_value"] < gof["threshold"] else ")"))  # fmt: skip
        lines.append(header + (f" {'truth':>8}" if args.truth else ""))
        truth = {} if not args.truth else {
            n: float(derived(n, np.array(args.truth))) for n in (*PARAM_NAMES, *DERIVED_NAMES)}
        for pname in (*PARAM_NAMES, *DERIVED_NAMES):
            e = summary[pname]
            line = f"  {pname:<10} {e['mean']:8.4f} {e['std']:8.4f} {e['q16']:8.4f} {e['q84']:8.4f}"
            lines.append(line + (f" {truth[pname]:8.4f}" if args.truth else ""))
    text = "\n".join(lines) + "\n"
    report = {"map": args.map[0] if len(args.map) == 1 else list(args.map), **reports[0]}
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
    from diffinfer.plots import STYLES

    analyses = [like if like in REFERENCE_LIKELIHOODS else "diffusion" for like, _ in runs]
    # each analysis by its own name (the two NPE references are both "neural posterior
    # estimates" in words)
    labels = [STYLES[a].label for a in analyses]
    triangle(all_samples, out / "triangle.png", labels=labels, analyses=analyses,
             truth=None if not args.truth else np.array(args.truth),
             title=where if len(args.map) == 1 else f"{len(args.map)} maps")  # fmt: skip
    print(text, end="")
    print(f"  wrote samples (npz and GetDist chains/), summary.txt/json, triangle.png in {out}")
    return 0


_N_TIMESTEPS_HELP = (
    "importance-sampled timesteps of the vlb likelihood (default 8 with the control "
    "variate of a spectral network, else 16: diffinfer.posterior.DEFAULT_CV_TIMESTEPS, "
    "DEFAULT_VLB_TIMESTEPS; 0: every term)"
)
_MAP_HELP = (
    "the density contrast rho/rho_mean, positive with mean about 1, unless --kind says "
    "otherwise; N x N pixels as the model expects"
)


def _add_map_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=FIELD_KINDS, default="density",
                   help="what the map holds: density (rho/rho_mean, default), overdensity "
                        "(delta), mass (mass or counts per pixel, any unit: divided by the "
                        "map's mean), log10 (log10 of rho/rho_mean)")  # fmt: skip
    p.add_argument("--index", type=int,
                   help="which map of a stack (M, N, N), e.g. a CAMELS maps file")  # fmt: skip
    p.add_argument("--downsample", type=int, metavar="F",
                   help="average the map over F x F pixel blocks first (a 256^2 map of the "
                        "model's box with F = 4 for a 64^2 model; a block mean's pixel "
                        "window differs from the log-normal simulator's: docs/usage.md)",
                   )  # fmt: skip


def _read_map(path: str, index: int | None = None, downsample: int | None = None) -> np.ndarray:
    """One map of a file, its options named as the command line names them
    (:func:`diffinfer.io.read_map`)."""
    from diffinfer.io import read_map

    return read_map(path, index, downsample, option_prefix="--")


def _output_dir(path: str):
    """Create the output directory (after the inputs are checked) and check it is writable."""
    import os
    from pathlib import Path

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise DataFileError(f"--out {path} exists and is not a directory; choose another path")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK | os.X_OK):
        raise DataFileError(f"--out {path} is not writable; choose another directory")
    return out


def _parse_likelihood(text: str) -> str | list[int]:
    if text in ("l0", "vlb", *REFERENCE_LIKELIHOODS):
        return text
    try:
        return [int(i) for i in text.split(",")]
    except ValueError as exc:
        raise DiffinferError(
            f"--likelihood must be l0, vlb, exact, power or term indices like 0,1,2; got {text!r}"
        ) from exc


def _parse_set(items: Sequence[str] | None) -> dict:
    """Posterior options given as ``--set OPTION=VALUE`` (values read as YAML scalars or
    lists); the option names and values are checked by ``posterior``."""
    import math

    import yaml

    options: dict = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise InputError(f"--set {item!r} must look like OPTION=VALUE (n_coarse=16)")
        if name in options:
            raise InputError(f"--set gives option {name!r} twice")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise InputError(f"--set {item!r}: the value is not a number, word or list") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"--set {item!r}: the value must be finite")
        options[name] = value
    return options


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from diffinfer.calibration.study import StudyConfig, run_study
    from diffinfer.validation import check_float, check_int

    # every value is checked before run_study creates --out or writes study.json
    for flag, value, low in (("--n-maps", args.n_maps, 1), ("--n-draws", args.n_draws, 10),
                             ("--workers", args.workers, 1), ("--threads", args.threads, 1),
                             ("--seed", args.seed, 0),
                             ("--maps-per-theta", args.maps_per_theta, 1)):  # fmt: skip
        check_int(flag, value, low=low)
    check_float("--noise-sigma", args.noise_sigma, low=0)
    if args.temperature is not None:
        check_float("--temperature", args.temperature, low=0, low_open=True)
    options = _parse_set(args.set)
    if args.n_timesteps is not None:
        check_int("--n-timesteps", args.n_timesteps, low=0, what="0: every term")
        options["n_timesteps"] = args.n_timesteps or None
    analyses = [a.strip() for a in args.analyses.split(",")]
    config = StudyConfig(
        model=args.model, likelihood=_parse_likelihood(args.likelihood),
        analyses=analyses, n_maps=args.n_maps, method=args.method,
        data=args.data, split=args.split, seed=args.seed, n_draws=args.n_draws,
        temperature=args.temperature, noise_sigma=args.noise_sigma, options=options,
        maps_per_theta=args.maps_per_theta,
    )  # fmt: skip
    report = run_study(config, args.out, workers=args.workers, scheduler=args.scheduler,
                       threads=args.threads, progress=not args.no_progress)  # fmt: skip
    print(_report_table(report))
    print("  HPD / TARP dev: largest distance of the coverage curves from the diagonal (0 if "
          "calibrated); z: (posterior mean - truth) / sd over the maps (mean 0, sd 1 if "
          "calibrated); min dev: the smallest deviation this many maps surely detect")
    print(f"  report.md (read this), report.json and figures/ in {args.out}")
    return 0


def _report_table(report: dict) -> str:
    """The table ``calibrate`` prints; a number that is missing (null in report.json) or
    not finite (e.g. the spread over one map) shows as nan.

    ``min dev`` is the minimum detectable deviation of the study's coverage bands and the
    last column the verdict (``calibrated``, ``not enough maps`` with the maps needed to
    resolve the verdict's resolution, or ``miscalibrated``); see
    :func:`diffinfer.calibration.report.verdict`.
    """

    def num(value: object, fmt: str) -> str:
        width = int(fmt.split(".")[0])
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return format(float(value), fmt)
        return f"{'nan':>{width}}"

    lines = [
        f"  {'analysis':<10} {'maps':>5} {'HPD dev':>8} {'TARP dev':>9} "
        f"{'z mean Om':>9} {'z sd Om':>8} {'z mean s8':>9} {'z sd s8':>8} {'min dev':>7} verdict"
    ]
    for a, r in report["analyses"].items():
        z = list(r["z_score"].values())
        verdict = r["verdict"]
        if verdict == "not enough maps":
            verdict += f" (about {r['maps_needed']} needed)"
        lines.append(
            f"  {a:<10} {r['n_maps']:5d} {num(r['hpd_coverage']['max_deviation'], '8.3f')} "
            f"{num(r['tarp']['max_deviation'], '9.3f')} {num(z[0]['mean'], '9.2f')} "
            f"{num(z[0]['std'], '8.2f')} {num(z[1]['mean'], '9.2f')} "
            f"{num(z[1]['std'], '8.2f')} {num(r['min_detectable_deviation'], '7.3f')} {verdict}"
        )
    return "\n".join(lines)


def _cmd_recalibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffinfer.calibration.study import (
        STUDY_FILE,
        check_same_model,
        fit_temperature,
        read_results,
        store_temperature,
    )
    from diffinfer.errors import InputError
    from diffinfer.io import read_json

    folder = Path(args.study)
    if not folder.is_dir():
        raise DataFileError(f"study directory not found: {folder}")
    study = read_json(folder / STUDY_FILE, what="study description")
    if args.store and args.model is None:
        raise InputError(
            f"--store writes a model card: name the model with --model NAME_OR_DIR (this "
            f"study ran with {study.get('model')!r}); only the card you name is changed"
        )
    if args.model is not None:
        check_same_model(args.model, study.get("model"), folder)
    results, bad = read_results(folder, "diffusion")
    names = ", ".join(p.name for p in bad)
    if bad and not args.skip_unreadable:
        raise DataFileError(
            f"{len(bad)} unreadable diffusion result file(s) in {folder / 'results'}: {names}; "
            "rerun `diffinfer calibrate` with the study's options to recompute them, or pass "
            "--skip-unreadable to fit without those maps"
        )
    if bad:
        print(f"diffinfer: warning: skipped {len(bad)} unreadable result file(s): {names}",
              file=sys.stderr)  # fmt: skip
    if not results:
        raise DiffinferError(
            f"{folder} holds no diffusion results (analyses {study.get('analyses')}): the "
            "temperature is fitted to the diffusion likelihood's posteriors"
        )
    fit = fit_temperature(results, estimator=args.estimator)
    print(f"likelihood temperature {fit['temperature']:.3f} +- {fit['se']:.3f} "
          f"from {fit['n_maps']} maps of {args.study} ({args.estimator} of d^2)")  # fmt: skip
    if args.store:
        first = results[0]
        if len({(str(r.get("terms")), int(r.get("n_noise", 0))) for r in results}) != 1:
            raise DiffinferError(f"{args.study} mixes likelihood term sets; fit one at a time")
        noise = {float(r.get("noise_sigma", study.get("noise_sigma") or 0.0)) for r in results}
        if len(noise) != 1:
            raise DiffinferError(f"{args.study} mixes noise levels {sorted(noise)}; fit one "
                                 "at a time")  # fmt: skip
        if study.get("split") != "validation" and study.get("data"):
            print("warning: fitting on the test split; report coverage on other maps")
        path = store_temperature(args.model, fit, str(first["terms"]), int(first["n_noise"]),
                                 noise_sigma=noise.pop())  # fmt: skip
        print(f"stored in {path}; posterior() applies it to this term set by default")
    return 0


def _cmd_fit_proposal(args: argparse.Namespace) -> int:
    import time

    from diffinfer.calibration.study import StudyConfig, _model, test_case
    from diffinfer.diffusion.checkpoint import update_card
    from diffinfer.proposal import check_proposal_options, fit_timestep_proposal, proposal_quantiles

    check_int("--n-maps", args.n_maps, low=2)
    check_proposal_options(smooth=args.smooth, floor=args.floor, seed=args.seed)
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


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``diffinfer COMMAND: error: ... (see --help)``."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``diffinfer`` command."""
    parser = _Parser(
        prog="diffinfer",
        description="Cosmological inference with diffusion models on matter-density maps.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (anywhere on the line)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "simulate",
        help="write a synthetic data set (log-normal or N-body maps) in the CAMELS CMD format",
        description=(
            "Simulate density maps on a Latin hypercube over the prior box and write "
            "Maps_Mtot_<suite>_<set>_z=0.00.npy, params_<set>_<suite>.txt and dataset.json "
            "into OUT (suite Lognormal or Nbody). An interrupted run continues where it "
            "stopped when the same command is given again; a directory holding another data "
            "set is refused."
        ),
    )
    p.add_argument("--out", required=True, help="output directory (created if needed)")
    p.add_argument("--simulator", choices=("lognormal", "nbody"), default="lognormal",
                   help="log-normal maps with an exact likelihood (default), or particle-mesh "
                        "N-body maps through JaxPM (pip install 'diffinfer[nbody]'; "
                        "docs/nbody.md)")  # fmt: skip
    p.add_argument(
        "--n-cosmologies", type=int, default=1000, help="Latin-hypercube points (default 1000)"
    )
    p.add_argument(
        "--maps-per-cosmology", type=int, default=15, help="maps per cosmology (default 15)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of parameters and maps (default 0)")
    p.add_argument("--set", default="LH", help="CMD set name in the file names (default LH)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    g = p.add_argument_group("map geometry")
    g.add_argument("--n-pix", type=int, default=64, help="pixels per map side N (default 64)")
    g.add_argument("--box-size", type=float, default=None,
                   help="map (and N-body box) side L in Mpc/h (default 500 log-normal, 128 "
                        "N-body)")  # fmt: skip
    g.add_argument("--depth", type=float, default=None,
                   help="slab depth d in Mpc/h (log-normal only; default 50)")  # fmt: skip
    g = p.add_argument_group("N-body runs (--simulator nbody)")
    g.add_argument("--particles", type=int, default=None,
                   help="particles per side (default 64)")  # fmt: skip
    g.add_argument("--mesh", type=int, default=None,
                   help="force mesh per side; JaxPM needs it equal to --particles "
                        "(the default)")  # fmt: skip
    g.add_argument("--steps", type=int, default=10,
                   help="leapfrog steps from --a-initial to a = 1 (default 10)")  # fmt: skip
    g.add_argument("--a-initial", type=float, default=0.1,
                   help="scale factor of the 2LPT initial conditions (default 0.1)")  # fmt: skip
    g.add_argument("--slabs", type=int, default=5,
                   help="slabs per axis; a box gives 3 x SLABS maps (default 5)")  # fmt: skip
    g.add_argument("--refine", type=int, default=2,
                   help="Lagrangian refinement of the painted tracers per axis "
                        "(default 2)")  # fmt: skip
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser(
        "estimate",
        help="estimate (Omega_m, sigma_8) of one map with the exact log-normal likelihood",
        description=(
            "Simulate a log-normal map at (--omega-m, --sigma-8), or read one with --map, "
            "and print the maximum-likelihood parameters with their Fisher errors."
        ),
    )
    p.add_argument("map", nargs="?", help="a map to analyse (.npy, or .npz: " + _MAP_HELP
                   + "); without it a map is simulated at --omega-m, --sigma-8")  # fmt: skip
    p.add_argument("--map", dest="map_option", help=argparse.SUPPRESS)  # its former name
    _add_map_options(p)
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
    p.add_argument(
        "--omega-m", type=float, default=0.3, help="Omega_m, inside the model's prior (default 0.3)"
    )
    p.add_argument(
        "--sigma-8", type=float, default=0.8, help="sigma_8, inside the model's prior (default 0.8)"
    )
    p.add_argument("--n", type=int, default=16, help="maps to emulate, >= 1 (default 16)")
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=DEFAULT_SAMPLER,
        help=f"emulation sampler (default {DEFAULT_SAMPLER}; docs/diffusion.md compares them)",
    )
    p.add_argument(
        "--spacing",
        choices=SPACINGS,
        help="how the timesteps are spread (default: the sampler's own, "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_SPACING.items())
        + ")",
    )
    p.add_argument(
        "--steps",
        type=int,
        help=f"denoiser calls, 1 ... T (default: T for ddpm, else {DEFAULT_STEPS})",
    )
    p.add_argument("--seed", type=int, default=0, help="non-negative integer (default 0)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument(
        "--out",
        required=True,
        help="output directory (created after the inputs are checked; must be writable)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_emulate)

    p = sub.add_parser(
        "infer",
        help="posterior of (Omega_m, sigma_8) for one map",
        description=(
            "Compute the posterior of one map with a diffusion model, the exact log-normal "
            "likelihood or the power-spectrum likelihood; write samples (with --truth in "
            "them), a summary (text and JSON), diagnostics and a GetDist triangle plot into "
            "--out. The map is the projected density contrast rho/rho_mean (positive, mean "
            "about 1; --kind for overdensity, mass or log10 maps) on the model's grid: "
            "lognormal64 takes 64 x 64 pixels over 500 Mpc/h with a 50 Mpc/h slab (the "
            "model card's field section)."
        ),
    )
    p.add_argument("map", nargs="+",
                   help="the map, .npy or .npz: " + _MAP_HELP + "; several maps of one "
                   "cosmology: their likelihoods multiply")  # fmt: skip
    _add_map_options(p)
    p.add_argument(
        "--model",
        default="lognormal64",
        help="model name or directory, 'oracle', or 'none' (exact likelihood only)",
    )
    p.add_argument(
        "--likelihood",
        default="vlb",
        help="vlb (default), l0, comma-separated term indices, exact, power, npe or "
        "npe-power (neural posterior estimators; --set npe=DIR picks one)",
    )
    p.add_argument("--n-timesteps", type=int, help=_N_TIMESTEPS_HELP)
    p.add_argument("--method", choices=("grid", "emcee", "nuts"), default="grid")
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="auto",
                   help="network precision of the diffusion likelihood (auto: bf16 where "
                        "the device computes it natively)")  # fmt: skip
    p.add_argument("--reference", choices=("none", *REFERENCE_LIKELIHOODS), default="none",
                   help="also compute this reference posterior and show it alongside")  # fmt: skip
    p.add_argument("--n-samples", type=int, default=4000, help="posterior draws (default 4000)")
    p.add_argument(
        "--truth", type=float, nargs=2, metavar=("OMEGA_M", "SIGMA_8"), help="mark a known theta"
    )
    p.add_argument("--temperature", type=float,
                   help="likelihood temperature: the posterior uses L^(1/T) (default: the "
                        "card's for the diffusion likelihood, else 1)")  # fmt: skip
    p.add_argument("--set", action="append", metavar="OPTION=VALUE",
                   help="posterior option, e.g. n_aligned=12 or n_walkers=32 (repeatable; "
                        "docs/posterior.md lists them)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seeds the likelihood and the sampler")
    p.add_argument("--threads", type=int,
                   help="torch threads, >= 1 (default: torch's choice here)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_infer)

    p = sub.add_parser(
        "calibrate",
        help="coverage study: posteriors of many test maps, calibration metrics and figures",
        description=(
            "Compute the posterior of --n-maps test maps under the diffusion likelihood and "
            "the references (exact, power spectrum); write one result per map as it "
            "finishes (a killed or interrupted run resumes: rerun the same command), then "
            "report.json and figures/ in --out. Every option is checked before --out is "
            "created; Ctrl-C or SIGTERM stops the workers and keeps finished results. "
            "See docs/calibration.md."
        ),
    )
    p.add_argument("--model", default="lognormal64", help="model name or directory, or 'oracle'")
    p.add_argument("--likelihood", default="vlb", help="diffusion terms: vlb, l0 or 0,1,2")
    p.add_argument("--n-timesteps", type=int, help=_N_TIMESTEPS_HELP)
    p.add_argument("--analyses", default="diffusion,exact,power",
                   help="comma-separated: diffusion, exact, power, npe, npe-power (default "
                        "diffusion,exact,power)")  # fmt: skip
    p.add_argument("--method", choices=("grid", "emcee", "nuts"), default="grid")
    p.add_argument("--n-maps", type=int, default=200, help="test maps (default 200)")
    p.add_argument("--maps-per-theta", type=int, default=1,
                   help="maps of one cosmology per test case, analysed together (the product "
                        "of their likelihoods; default 1)")  # fmt: skip
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
    p.add_argument("--workers", type=int, default=1,
                   help="local worker processes, >= 1 (default 1)")  # fmt: skip
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per task, >= 1 (default 1)")  # fmt: skip
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
            "parameters); with --store --model NAME_OR_DIR, record it in that model's card "
            "(it must be the model the study ran with), where posterior() applies it to the "
            "same term set by default. Unreadable result files are an error unless "
            "--skip-unreadable."
        ),
    )
    p.add_argument("study", help="a study directory written by `diffinfer calibrate`")
    p.add_argument("--model", metavar="NAME_OR_DIR",
                   help="the study's model (checked against study.json); --store writes to "
                        "this model's card and to no other")  # fmt: skip
    p.add_argument("--store", action="store_true",
                   help="write the temperature to the card of --model (required)")  # fmt: skip
    p.add_argument("--skip-unreadable", action="store_true",
                   help="fit without result files that cannot be read (default: an error "
                        "naming them)")  # fmt: skip
    p.add_argument("--estimator", choices=("mean", "median"), default="mean",
                   help="mean of d^2 (default) or its median, robust to a few maps far from "
                        "the truth (docs/calibration.md)")  # fmt: skip
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
    """Run the command line; returns the exit status.

    Every expected failure (bad input, unreadable or unwritable files, a device that is not
    there, an interrupt) prints one line ``diffinfer: error: ...`` and returns 2 (130 for an
    interrupt); ``--debug`` shows the traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    parser = build_parser()
    args = parser.parse_args(argv)
    import warnings

    default_format = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None) -> str:
        """diffinfer's own warnings (Monte Carlo error, goodness of fit, calibration) as
        one line each, as its errors are; others as Python writes them."""
        if category.__module__.startswith("diffinfer"):
            return f"diffinfer: warning: {message}\n"
        return default_format(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        return _run(args, debug)
    finally:
        warnings.formatwarning = default_format


def _run(args: argparse.Namespace, debug: bool) -> int:
    """The command of ``args``, its expected failures as one line (see :func:`main`)."""
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into a reader that stopped (e.g. head)
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        if debug:
            raise
        print("diffinfer: interrupted (calibrate, simulate and train --resume continue from "
              "what was finished)", file=sys.stderr)  # fmt: skip
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"diffinfer: error: {_describe(exc)}", file=sys.stderr)
        if not isinstance(exc, (DiffinferError, OSError, ValueError, RuntimeError)):
            print("diffinfer: this looks like a bug; rerun with --debug and report the "
                  "traceback", file=sys.stderr)  # fmt: skip
        return 2


def _describe(exc: BaseException) -> str:
    """One line for an exception: the project's own message, or the kind and message of an
    error raised by the system or a library (file, device, memory)."""
    if isinstance(exc, DiffinferError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
