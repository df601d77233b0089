"""The configuration of a coverage study (:class:`StudyConfig`): every value checked once, when
the study is made, before anything is written."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from diffinfer.calibration.results import ANALYSES
from diffinfer.errors import InputError
from diffinfer.inference.options import METHODS
from diffinfer.io import (
    json_safe,
)
from diffinfer.validation import check_choice, check_float, check_int

STUDY_FILE = "study.json"


SPLITS = ("test", "validation", "all")
"""Which maps of a data set a study reads: the held-out test or validation split of the
training data set, or ``"all"``: every map of a test set simulated apart (another seed),
refused for the data set a model or reference was trained on."""


NO_MODEL = "none"
"""The model of a study of the references alone (analyses without "diffusion", on a data set):
the split and the prior box come from the data set."""


@dataclass
class StudyConfig:
    """What a coverage study computes; every value is checked on construction.

    Attributes
    ----------
    model
        Model name or directory, or ``"oracle"``.
    likelihood
        Diffusion likelihood terms: ``"vlb"``, ``"l0"`` or a list of term indices.
    analyses
        Which posteriors to compute per map: any of ``"diffusion"``, ``"exact"``, ``"power"``,
        ``"npe"``, ``"npe-power"`` and ``"npe-diffusion"`` (neural posterior estimators,
        option ``npe`` names a reference other than the shipped default).
    n_maps
        Number of test maps.
    method
        Posterior method (``"grid"`` gives exact HPD levels; MCMC draws are thinned).
    data
        ``None``: maps from the log-normal simulator at cosmologies uniform in the prior;
        else a CAMELS-format directory whose ``split`` supplies maps and true parameters.
    split
        ``"test"`` or ``"validation"`` (e.g. the calibration split for a temperature fit)
        of the training data set, or ``"all"``, every map of a data set simulated apart
        for testing (one map per cosmology first, so ``n_maps`` up to the number of
        cosmologies gives independent maps).
    seed
        Seeds the cosmologies, the maps and every posterior.
    n_draws
        Posterior draws kept per map (ranks, TARP, triangles).
    temperature
        Likelihood temperature of the diffusion analysis (None: the model card's).
        ``options={"temperature": t}`` tempers every analysis (e.g. to check that a
        deliberately overconfident posterior is detected).
    noise_sigma
        Gaussian pixel noise (model space) added to every test map and assumed by the
        likelihoods.
    maps_per_theta
        Maps of one cosmology per test case (default 1): the posterior of each case is that
        of its maps together (the product of their likelihoods). Simulated: that many maps
        of the case's theta; from a data set: the first maps of one cosmology of the split
        per case. The NPE references analyse one map and are refused for more.
    options
        Further :func:`diffinfer.posterior` options (n_timesteps, n_coarse, ...): names
        from ``diffinfer.inference.options.SAMPLER_OPTIONS[method]`` and the likelihood options,
        JSON values (they are written to ``study.json``).

    Raises
    ------
    InputError
        A value of the wrong type or range, an unknown analysis, or an unknown posterior
        option (a typo would otherwise be dropped by the reference analyses).
    """

    model: str = "lognormal64"
    likelihood: str | list[int] = "vlb"
    analyses: list[str] = field(default_factory=lambda: ["diffusion", "exact", "power"])
    n_maps: int = 200
    method: str = "grid"
    data: str | None = None
    split: str = "test"
    seed: int = 0
    n_draws: int = 1000
    temperature: float | None = None
    noise_sigma: float = 0.0
    options: dict = field(default_factory=dict)
    maps_per_theta: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.model, os.PathLike):
            self.model = os.fspath(self.model)
        if not isinstance(self.model, str) or not self.model.strip():
            raise InputError(f"model must be a model name or directory, or 'oracle'; "
                             f"got {self.model!r}")  # fmt: skip
        self.likelihood = _check_likelihood(self.likelihood)
        if isinstance(self.analyses, str) or not isinstance(self.analyses, (list, tuple)):
            raise InputError(f"analyses must be a list drawn from {list(ANALYSES)}, "
                             f"got {self.analyses!r}")  # fmt: skip
        self.analyses = list(self.analyses)
        bad = [a for a in self.analyses if a not in ANALYSES]
        if bad or not self.analyses:
            raise InputError(f"analyses must be among {list(ANALYSES)}; got {self.analyses} "
                             f"(unknown: {bad})" if bad else
                             f"analyses must name at least one of {list(ANALYSES)}")  # fmt: skip
        if len(set(self.analyses)) != len(self.analyses):
            raise InputError(f"analyses lists an analysis twice: {self.analyses}")
        if self.model == NO_MODEL and ("diffusion" in self.analyses or self.data is None):
            raise InputError("model 'none' is for studies of the references alone on a data "
                             "set: drop the diffusion analysis and give data, or name a "
                             "model")  # fmt: skip
        self.n_maps = check_int("n_maps", self.n_maps, low=1, what="test maps")
        self.method = check_choice("method", self.method, METHODS)
        if self.data is not None:
            if not isinstance(self.data, (str, os.PathLike)) or not os.fspath(self.data):
                raise InputError(f"data must be a directory or None, got {self.data!r}")
            self.data = os.fspath(self.data)
        self.split = check_choice("split", self.split, SPLITS)
        self.seed = check_int("seed", self.seed, low=0)
        self.n_draws = check_int("n_draws", self.n_draws, low=10, what="posterior draws per map")
        if self.temperature is not None:
            self.temperature = check_float("temperature", self.temperature, low=0,
                                           low_open=True)  # fmt: skip
            if "diffusion" not in self.analyses:
                raise InputError(f"temperature tempers the diffusion analysis, and this study "
                                 f"has none (analyses {self.analyses}): drop it, or temper "
                                 "every analysis with options={'temperature': t} (--set "
                                 "temperature=T)")  # fmt: skip
        self.noise_sigma = check_float("noise_sigma", self.noise_sigma, low=0,
                                       what="model-space pixel noise")  # fmt: skip
        if self.model == NO_MODEL and self.noise_sigma > 0:
            raise InputError("noise_sigma is added in a model's space: name the model")
        self.maps_per_theta = check_int("maps_per_theta", self.maps_per_theta, low=1,
                                        what="maps of one cosmology per test case")  # fmt: skip
        npe = [a for a in self.analyses if a.startswith("npe")]
        if self.maps_per_theta > 1 and npe:
            raise InputError(f"the {npe} references estimate the posterior of one map; "
                             f"maps_per_theta={self.maps_per_theta} needs the diffusion, "
                             "exact or power analyses")  # fmt: skip
        _check_options(self)


def _check_likelihood(likelihood: object) -> str | list[int]:
    """The diffusion term set: "vlb", "l0" or a non-empty list of distinct term indices."""
    if isinstance(likelihood, str):
        return check_choice("likelihood", likelihood, ("vlb", "l0"))
    if isinstance(likelihood, (list, tuple)) and likelihood:
        terms = [check_int("likelihood term index", i, low=0) for i in likelihood]
        if len(set(terms)) != len(terms):
            raise InputError(f"likelihood lists a term twice: {terms}")
        return terms
    raise InputError("likelihood must be 'vlb', 'l0' or a non-empty list of term indices, "
                     f"got {likelihood!r}")  # fmt: skip


def _check_options(config: StudyConfig) -> None:
    """Names and values of the posterior options, against what :func:`diffinfer.posterior`
    accepts for the study's method (every analysis sees the options it understands)."""
    from diffinfer.inference.options import (
        LIKELIHOOD_OPTIONS,
        MC_OPTIONS,
        SAMPLER_OPTIONS,
        check_posterior_options,
    )

    options = config.options
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise InputError(f"options must be a dict of posterior options, got {options!r}")
    if "noise_sigma" in options:
        raise InputError("give the pixel noise as noise_sigma (--noise-sigma), not as a "
                         "posterior option: it is added to the test maps and modelled")  # fmt: skip
    names = (*LIKELIHOOD_OPTIONS, *MC_OPTIONS, *SAMPLER_OPTIONS[config.method])
    allowed = [o for o in names if o != "noise_sigma"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        import difflib

        hints = [f"{u!r} (did you mean {near[0]!r}?)" if near else repr(u) for u in unknown
                 for near in [difflib.get_close_matches(u, allowed, n=1)]]  # fmt: skip
        raise InputError(f"unknown posterior option {', '.join(hints)} for method "
                         f"{config.method!r}; options: {allowed}")  # fmt: skip
    try:
        json.dumps(json_safe(options), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"options must be JSON values (numbers, strings, lists; no NaN or "
                         f"inf): they are written to {STUDY_FILE} ({exc}); give a fitted "
                         "power-spectrum likelihood as a file name") from exc  # fmt: skip
    # the values, as each analysis's posterior() will receive them
    for analysis in config.analyses:
        kwargs = posterior_kwargs(config, analysis)
        likelihood = kwargs.pop("likelihood")
        check_posterior_options(likelihood, config.method, config.seed, kwargs)


def posterior_kwargs(config: StudyConfig, analysis: str) -> dict:
    """The arguments of :func:`diffinfer.posterior` for one analysis of a study: the
    diffusion likelihood gets every option, the references those they understand."""
    kwargs = dict(config.options)
    if config.noise_sigma > 0:
        kwargs["noise_sigma"] = config.noise_sigma
    if analysis == "diffusion":
        if config.temperature is not None:
            kwargs["temperature"] = config.temperature
        return {"likelihood": config.likelihood, **kwargs}
    # references take only the options they understand
    from diffinfer.inference.options import SAMPLER_OPTIONS

    keep = {"noise_sigma", "spectrum", "temperature", *SAMPLER_OPTIONS[config.method]}
    if analysis.startswith("npe"):
        keep = (keep - {"spectrum"}) | {"npe"}
    else:
        keep.discard("npe")
    return {"likelihood": analysis, **{k: v for k, v in kwargs.items() if k in keep}}
