"""The argument parser of the ``diffinfer`` command: its subcommands and their options."""

from __future__ import annotations

import argparse

from diffinfer.calibration.config import SPLITS
from diffinfer.cli.calibrate import cmd_calibrate, cmd_recalibrate
from diffinfer.cli.commands import (
    cmd_emulate,
    cmd_estimate,
    cmd_fit_proposal,
    cmd_simulate,
    cmd_train,
)
from diffinfer.cli.infer import cmd_infer
from diffinfer.diffusion.model import DEFAULT_SAMPLER, DEFAULT_STEPS
from diffinfer.diffusion.samplers import (
    DEFAULT_SPACING,
    SAMPLERS,
    SPACINGS,
)
from diffinfer.fields.grid import FIELD_KINDS
from diffinfer.inference.options import METHODS, REFERENCE_LIKELIHOODS


def _add_geometry(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("map geometry (default: the reference configuration)")
    g.add_argument("--n-pix", type=int, default=64, help="pixels per map side N (default 64)")
    g.add_argument(
        "--box-size", type=float, default=500.0, help="map side L in Mpc/h (default 500)"
    )
    g.add_argument("--depth", type=float, default=50.0, help="slab depth d in Mpc/h (default 50)")


_N_TIMESTEPS_HELP = (
    "importance-sampled timesteps of the vlb likelihood (default 8 with the control "
    "variate of a spectral network, else 16: diffinfer.likelihoods.terms.DEFAULT_CV_TIMESTEPS, "
    "DEFAULT_VLB_TIMESTEPS; 0: every term)"
)
_T_MIN_HELP = (
    "scale cut of the vlb likelihood: sum only the terms at timesteps t >= T_MIN (default 1, "
    "every term; docs/likelihood.md)"
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

    _add_simulate(sub)
    _add_estimate(sub)
    _add_train(sub)
    _add_emulate(sub)
    _add_infer(sub)
    _add_calibrate(sub)
    _add_recalibrate(sub)
    _add_fit_proposal(sub)
    return parser


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    """The ``simulate`` command."""
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
    p.set_defaults(func=cmd_simulate)


def _add_estimate(sub: argparse._SubParsersAction) -> None:
    """The ``estimate`` command."""
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
    p.set_defaults(func=cmd_estimate)


def _add_train(sub: argparse._SubParsersAction) -> None:
    """The ``train`` command."""
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
    p.set_defaults(func=cmd_train)


def _add_emulate(sub: argparse._SubParsersAction) -> None:
    """The ``emulate`` command."""
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
    p.set_defaults(func=cmd_emulate)


def _add_infer(sub: argparse._SubParsersAction) -> None:
    """The ``infer`` command."""
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
        help="vlb (default), l0, comma-separated term indices, exact, power, npe, npe-power "
        "or npe-diffusion (neural posterior estimators; --set npe=DIR picks one)",
    )
    p.add_argument("--n-timesteps", type=int, help=_N_TIMESTEPS_HELP)
    p.add_argument("--t-min", type=int, help=_T_MIN_HELP)
    p.add_argument("--method", choices=METHODS, default="grid")
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
    p.set_defaults(func=cmd_infer)


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    """The ``calibrate`` command."""
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
    p.add_argument("--t-min", type=int, help=_T_MIN_HELP)
    p.add_argument("--analyses", default="diffusion,exact,power",
                   help="comma-separated: diffusion, exact, power, npe, npe-power, "
                        "npe-diffusion (default diffusion,exact,power)")  # fmt: skip
    p.add_argument("--method", choices=METHODS, default="grid")
    p.add_argument("--n-maps", type=int, default=200, help="test maps (default 200)")
    p.add_argument("--maps-per-theta", type=int, default=1,
                   help="maps of one cosmology per test case, analysed together (the product "
                        "of their likelihoods; default 1)")  # fmt: skip
    p.add_argument("--data", help="CAMELS-format data directory (default: simulate maps)")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="held-out split of --data (validation: a calibration split), or all: "
                        "every map of a test set simulated apart (another --seed)")  # fmt: skip
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
    p.add_argument("--batch", type=int,
                   help="maps of the diffusion analysis computed together, their network "
                        "calls batched, >= 1 (default: 1 on a CPU, from free memory on a "
                        "GPU)")  # fmt: skip
    p.add_argument("--device", default="cpu",
                   help="where the diffusion model runs in every worker: cpu (default), cuda, "
                        "cuda:N or mps")  # fmt: skip
    p.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://10.0.0.1:8786")
    p.add_argument("--out", required=True, help="study directory (resumed if it exists)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_calibrate)


def _add_recalibrate(sub: argparse._SubParsersAction) -> None:
    """The ``recalibrate`` command."""
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
    p.set_defaults(func=cmd_recalibrate)


def _add_fit_proposal(sub: argparse._SubParsersAction) -> None:
    """The ``fit-proposal`` command."""
    p = sub.add_parser(
        "fit-proposal",
        help="fit the VLB timestep proposal of a model on pilot maps; optionally store it",
        description=(
            "Measure, on pilot maps of the calibration (validation) split, how much each "
            "timestep's term changes across the model's own posterior, and fit the "
            "importance-sampling proposal of the VLB likelihood to it "
            "(diffinfer.likelihoods.proposal); "
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
    p.set_defaults(func=cmd_fit_proposal)
