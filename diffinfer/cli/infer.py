"""``diffinfer infer``: the posterior of one or more maps, its summary, samples and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from diffinfer.cli.commands import output_dir, parse_likelihood, parse_set, read_map_option
from diffinfer.errors import InputError
from diffinfer.inference.options import REFERENCE_LIKELIHOODS
from diffinfer.parameters import DERIVED_NAMES, PARAM_NAMES, derived
from diffinfer.validation import check_int


def cmd_infer(args: argparse.Namespace) -> int:
    import time

    import torch

    from diffinfer.inference.options import SAMPLER_OPTIONS
    from diffinfer.inference.posterior import posterior
    from diffinfer.io import write_json_atomic, write_text_atomic
    from diffinfer.plots import triangle
    from diffinfer.validation import check_device

    density = [read_map_option(m, args.index, args.downsample) for m in args.map]
    density = density[0] if len(density) == 1 else density
    where = " ".join(args.map) + ("" if args.index is None else f" [{args.index}]")
    check_int("--n-samples", args.n_samples, low=1)
    check_int("--seed", args.seed, low=0)
    if args.threads is not None:
        check_int("--threads", args.threads, low=1)
    check_device("--device", args.device)
    likelihood = parse_likelihood(args.likelihood)
    set_options = parse_set(args.set)
    from diffinfer.diffusion import load_model

    model = None if args.model == "none" else load_model(args.model, device=args.device)
    options = {"precision": args.precision}
    if args.n_timesteps is not None:
        check_int("--n-timesteps", args.n_timesteps, low=0)
        options["n_timesteps"] = args.n_timesteps or None
    if args.t_min is not None:  # its upper end (the schedule's T) is the likelihood's check
        options["t_min"] = check_int("--t-min", args.t_min, low=1, what="1: every term")
        if likelihood in REFERENCE_LIKELIHOODS:
            raise InputError(f"--t-min cuts the diffusion likelihood, not --likelihood "
                             f"{likelihood}; leave it out, or use --likelihood vlb")  # fmt: skip
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
                         "or --reference npe (or npe-power, npe-diffusion)")  # fmt: skip
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
    out = output_dir(args.out)
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
                + ("" if mc["met"] else f"; above mc_tol={mc['tolerance']:g}")
                + ")"
            )
        if gof["available"]:
            lines.append(f"  goodness of fit: posterior predictive p = {gof['p_value']:.3g} "
                         f"(P(k) and one-point PDF against {gof['n_sims']} simulated maps"
                         + ("; below 0.05: the map is unlike the model's)"
                            if gof["p_value"] < gof["threshold"] else ")"))  # fmt: skip
        lines.append(header + (f" {'truth':>8}" if args.truth else ""))
        truth = (
            {}
            if not args.truth
            else {
                n: float(derived(n, np.array(args.truth))) for n in (*PARAM_NAMES, *DERIVED_NAMES)
            }
        )
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
    from diffinfer.styles import STYLES

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
