"""The commands of ``diffinfer`` that make data and models (simulate, estimate, train,
emulate, fit-proposal) and the helpers every command shares."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffinfer.diffusion.model import default_steps
from diffinfer.diffusion.samplers import (
    DEFAULT_SPACING,
    denoiser_calls,
    grid_points,
)
from diffinfer.errors import DataFileError, DiffinferError, InputError
from diffinfer.inference.options import REFERENCE_LIKELIHOODS
from diffinfer.parameters import PARAM_NAMES
from diffinfer.validation import check_int


def field_config(args: argparse.Namespace):
    from diffinfer.fields import FieldConfig

    return FieldConfig(n_pix=args.n_pix, box_size=args.box_size, depth=args.depth)


def cmd_simulate(args: argparse.Namespace) -> int:
    from diffinfer.data import write_synthetic_dataset

    if args.simulator == "nbody":
        from diffinfer.simulators.nbody import NBodyConfig

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
        config = field_config(args)
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


def cmd_estimate(args: argparse.Namespace) -> int:
    from diffinfer.fields.grid import as_density
    from diffinfer.parameters import as_theta
    from diffinfer.simulators import LognormalSimulator

    sim = LognormalSimulator(field_config(args))
    truth = None
    if args.map is not None and args.map_option is not None:
        raise InputError("give the map once: as the positional MAP (--map is its old name)")
    args.map = args.map if args.map is not None else args.map_option
    if args.map is not None:
        density = as_density(read_map_option(args.map, args.index, args.downsample), kind=args.kind,
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


def cmd_train(args: argparse.Namespace) -> int:
    from diffinfer.training.config import load_config, parse_override
    from diffinfer.training.run import train

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


def cmd_emulate(args: argparse.Namespace) -> int:
    import os
    import shutil

    from diffinfer.diffusion import load_model
    from diffinfer.plots import emulation_figure
    from diffinfer.simulators import LognormalSimulator
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
        sim = LognormalSimulator.for_model(model)
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


def read_map_option(
    path: str, index: int | None = None, downsample: int | None = None
) -> np.ndarray:
    """One map of a file, its options named as the command line names them
    (:func:`diffinfer.fields.grid.read_map`)."""
    from diffinfer.fields.grid import read_map

    return read_map(path, index, downsample, option_prefix="--")


def output_dir(path: str):
    """Create the output directory (after the inputs are checked) and check it is writable."""
    import os

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise DataFileError(f"--out {path} exists and is not a directory; choose another path")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK | os.X_OK):
        raise DataFileError(f"--out {path} is not writable; choose another directory")
    return out


def parse_set(items: Sequence[str] | None) -> dict:
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


def cmd_fit_proposal(args: argparse.Namespace) -> int:
    import time

    from diffinfer.calibration.cases import study_model, test_case
    from diffinfer.calibration.config import StudyConfig
    from diffinfer.likelihoods.proposal import (
        check_proposal_options,
        fit_timestep_proposal,
        proposal_quantiles,
    )
    from diffinfer.store import update_card

    check_int("--n-maps", args.n_maps, low=2)
    check_proposal_options(smooth=args.smooth, floor=args.floor, seed=args.seed)
    config = StudyConfig(model=args.model, data=args.data, split="validation", seed=args.seed,
                         analyses=["diffusion"])  # fmt: skip
    model = study_model(args.model)
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


def parse_likelihood(text: str) -> str | list[int]:
    if text in ("l0", "vlb", *REFERENCE_LIKELIHOODS):
        return text
    try:
        return [int(i) for i in text.split(",")]
    except ValueError as exc:
        raise DiffinferError(
            f"--likelihood must be l0, vlb, exact, power or term indices like 0,1,2; got {text!r}"
        ) from exc
