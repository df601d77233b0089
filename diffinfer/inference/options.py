"""The options of :func:`diffinfer.posterior`: their names per method, their defaults, and the
one place where their values are checked (:func:`check_posterior_options`)."""

from __future__ import annotations

import os

from diffinfer.errors import InputError
from diffinfer.validation import check_bool, check_choice, check_float, check_int

METHODS = ("grid", "emcee", "nuts")
LIKELIHOOD_OPTIONS = ("n_noise", "n_timesteps", "max_batch", "precision", "noise_sigma",
                      "box_size", "temperature", "spectrum", "proposal",
                      "control_variate", "npe", "t_min")  # fmt: skip
MC_OPTIONS = ("mc_tol", "max_timesteps", "mc_refine")
"""Options of the Monte Carlo error control (every method; ignored by the references)."""
DEFAULT_MC_TOL = 0.1
"""Default ``mc_tol``: the largest Monte Carlo standard error of the posterior mean, in units
of the posterior's standard deviation, before timesteps are added (docs/posterior.md)."""
DEFAULT_MAX_TIMESTEPS_FACTOR = 64
"""Default ``max_timesteps``: this many times the starting timesteps (512 from the 8 of the
control variate; docs/posterior.md)."""
MC_REFINE = ("fit", "grid")
"""How added timesteps enter the grid (``mc_refine``): ``"fit"`` (default) evaluates them on
a 3 x 3 design about the posterior and fits a quadratic in theta to each, and turns to the
grid where a fit lacks fit by more than :data:`~diffinfer.inference.mc_control.
FIT_RESIDUAL_MAX` nats; ``"grid"`` evaluates them at every grid point from the first round,
up to :data:`~diffinfer.inference.mc_control.DIRECT_MAX_FACTOR` times the starting
timesteps. At Omega_m < 0.2 fits kept regardless of their lack of fit shifted the posterior
by +0.29 / -0.17 sd from the grid evaluation (20 held-out maps; docs/posterior.md)."""
REFERENCE_LIKELIHOODS = ("exact", "power", "npe", "npe-power", "npe-diffusion")
"""The reference analyses: the exact log-normal likelihood, the Gaussian power-spectrum
likelihood, and neural posterior estimators (sbi) on P(k) + a CNN, on P(k) alone, or on P(k)
and the diffusion likelihood's compression of the map."""
NPE_GRID = {"n_coarse": 16, "n_fine": 24}
"""The adaptive grid of the NPE references (likelihoods ``"npe"``, ...): finer than
the default, which misrepresents a flow's sharp density (docs/posterior.md)."""
SAMPLER_OPTIONS = {
    "grid": (
        "n_coarse",
        "n_fine",
        "tol",
        "max_passes",
        "upsample",
        "aligned",
        "n_aligned",
        "radius",
        "refine",
    ),
    "emcee": ("n_walkers", "max_steps", "min_tau_multiple", "surrogate"),
    "nuts": ("num_chains", "warmup_steps", "max_tree_depth", "surrogate"),
}


def check_posterior_options(likelihood: object, method: object, seed: object,
                            options: dict) -> None:  # fmt: skip
    """Validate the arguments of :func:`posterior` in one place, before anything is computed.

    Raises
    ------
    InputError
        An unknown method or option (with the close matches), or an option value of the
        wrong type or range; the message names the option, the value and what is expected.
    """
    import difflib

    check_choice("method", method, METHODS)
    check_int("seed", seed, low=0)
    if isinstance(likelihood, str):
        check_choice("likelihood", likelihood, ("vlb", "l0", *REFERENCE_LIKELIHOODS))
    elif not (isinstance(likelihood, (list, tuple)) and likelihood):
        raise InputError("likelihood must be 'vlb', 'l0', "
                         + ", ".join(repr(n) for n in REFERENCE_LIKELIHOODS)
                         + f" or a non-empty list of term indices, got {likelihood!r}")  # fmt: skip
    else:
        for i in likelihood:
            check_int("likelihood term index", i, low=0)
    allowed = [*LIKELIHOOD_OPTIONS, *MC_OPTIONS, *SAMPLER_OPTIONS[method]]
    for name in options:
        if name not in allowed:
            near = difflib.get_close_matches(name, allowed + [o for m in METHODS
                                             for o in SAMPLER_OPTIONS[m]], n=1)  # fmt: skip
            hint = f"; did you mean {near[0]!r}?" if near else ""
            if near and near[0] not in allowed:
                hint = f"; {near[0]!r} is an option of another method"
            raise InputError(f"unknown option {name!r} for method {method!r}{hint} "
                             f"(options: {allowed})")  # fmt: skip
    o = {k: v for k, v in options.items() if v is not None}
    if o.get("n_timesteps") == "auto":  # the default, said out loud
        del o["n_timesteps"]
    ints = {"n_noise": 1, "max_batch": 1, "n_coarse": 4, "n_fine": 4, "n_aligned": 4,
            "upsample": 1, "max_passes": 0, "n_walkers": 4, "max_steps": 1, "num_chains": 1,
            "warmup_steps": 0, "n_timesteps": 1, "t_min": 1}  # fmt: skip
    for name, low in ints.items():
        if name in o:
            check_int(name, o[name], low=low)
    if "mc_tol" in o:
        check_float("mc_tol", o["mc_tol"], low=0, low_open=True,
                    what="Monte Carlo error of the posterior mean, in posterior sd")  # fmt: skip
    if "mc_refine" in o:
        check_choice("mc_refine", o["mc_refine"], MC_REFINE)
    if "max_timesteps" in o:
        check_int("max_timesteps", o["max_timesteps"], low=1)
        if int(o.get("n_timesteps") or 0) > int(o["max_timesteps"]):
            raise InputError(f"max_timesteps={o['max_timesteps']} is below "
                             f"n_timesteps={o['n_timesteps']}; give max_timesteps >= "
                             "n_timesteps")  # fmt: skip
    if "n_walkers" in o and int(o["n_walkers"]) % 2:
        raise InputError(f"n_walkers must be even (emcee's stretch move), got {o['n_walkers']}")
    if "max_tree_depth" in o:
        check_int("max_tree_depth", o["max_tree_depth"], low=1, high=15)
    if "tol" in o:
        check_float("tol", o["tol"], low=0, high=1, low_open=True, high_open=True,
                    what="posterior mass")  # fmt: skip
    if "radius" in o:
        check_float("radius", o["radius"], low=2, high=10, what="standard deviations")
    for name in ("temperature", "box_size", "min_tau_multiple"):
        if name in o:
            check_float(name, o[name], low=0, low_open=True)
    if "noise_sigma" in o:
        check_float("noise_sigma", o["noise_sigma"], low=0, what="model-space pixel noise")
    if "precision" in o:
        check_choice("precision", o["precision"], ("auto", "fp32", "bf16"))
    for name in ("aligned", "refine"):
        if name in o:
            check_bool(name, o[name])
    if "control_variate" in o and o["control_variate"] != "auto":
        check_bool("control_variate", o["control_variate"])
    if "surrogate" in options and options["surrogate"] not in (None, "grid"):
        raise InputError(f"surrogate must be 'grid' or None, got {options['surrogate']!r}")
    if "npe" in o and not (isinstance(likelihood, str) and likelihood.startswith("npe")):
        raise InputError(f"option npe names a neural posterior estimator; it applies to "
                         f"likelihood='npe', 'npe-power' or 'npe-diffusion', not "
                         f"{likelihood!r}")  # fmt: skip
    if "npe" in o and not isinstance(o["npe"], (str, os.PathLike)):
        from diffinfer.likelihoods.npe import NPEReference

        if not isinstance(o["npe"], NPEReference):
            raise InputError(f"npe must be a reference name, a directory or an NPEReference, "
                             f"got {type(o['npe']).__name__}")  # fmt: skip
    if isinstance(likelihood, str) and likelihood in REFERENCE_LIKELIHOODS:
        diffusion_only = sorted({"n_noise", "n_timesteps", "max_batch", "precision", "proposal",
                                 "control_variate", "t_min"} & set(options))  # fmt: skip
        if diffusion_only:
            raise InputError(f"options {diffusion_only} apply to the diffusion likelihood, "
                             f"not to likelihood={likelihood!r}")  # fmt: skip


def sampler_option(method: str, options: dict, name: str) -> object:
    """A sampler option's value: given in ``options``, else the default in the signature of
    the method's back end (:func:`~diffinfer.inference.gridding.grid_posterior`,
    :func:`~diffinfer.inference.emcee.run_emcee`, :func:`~diffinfer.inference.nuts.run_nuts`),
    the one place each default is written."""
    import inspect

    from diffinfer.inference.emcee import run_emcee
    from diffinfer.inference.gridding import grid_posterior
    from diffinfer.inference.nuts import run_nuts

    if name in options:
        return options[name]
    backend = {"grid": grid_posterior, "emcee": run_emcee, "nuts": run_nuts}[method]
    return inspect.signature(backend).parameters[name].default
