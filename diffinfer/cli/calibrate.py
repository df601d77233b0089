"""``diffinfer calibrate`` and ``recalibrate``: coverage studies, and the temperature that
calibrates a likelihood."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from diffinfer.cli.commands import parse_likelihood, parse_set
from diffinfer.errors import DataFileError, DiffinferError, InputError
from diffinfer.validation import check_int


def cmd_calibrate(args: argparse.Namespace) -> int:
    from diffinfer.calibration.config import StudyConfig
    from diffinfer.calibration.study import run_study

    # StudyConfig and run_study check every value before --out is created or written
    options = parse_set(args.set)
    if args.n_timesteps is not None:
        check_int("--n-timesteps", args.n_timesteps, low=0, what="0: every term")
        options["n_timesteps"] = args.n_timesteps or None
    if args.t_min is not None:  # its upper end (the schedule's T) is the likelihood's check
        options["t_min"] = check_int("--t-min", args.t_min, low=1, what="1: every term")
    analyses = [a.strip() for a in args.analyses.split(",")]
    with _flag_names():
        config = StudyConfig(
            model=args.model, likelihood=parse_likelihood(args.likelihood),
            analyses=analyses, n_maps=args.n_maps, method=args.method,
            data=args.data, split=args.split, seed=args.seed, n_draws=args.n_draws,
            temperature=args.temperature, noise_sigma=args.noise_sigma, options=options,
            maps_per_theta=args.maps_per_theta,
        )  # fmt: skip
    with _flag_names():
        report = run_study(config, args.out, workers=args.workers, scheduler=args.scheduler,
                           threads=args.threads, batch=args.batch, device=args.device,
                           progress=not args.no_progress)  # fmt: skip
    print(report_table(report))
    print(
        "  HPD / TARP dev: largest distance of the coverage curves from the diagonal (0 if "
        "calibrated); z: (posterior mean - truth) / sd over the maps (mean 0, sd 1 if "
        "calibrated); min dev: the smallest deviation this many maps surely detect"
    )
    print(f"  report.md (read this), report.json and figures/ in {args.out}")
    return 0


STUDY_FLAGS = ("n_maps", "n_draws", "seed", "temperature", "noise_sigma", "maps_per_theta",
               "workers", "threads", "batch", "device")  # fmt: skip
"""Values of a study checked once, by :class:`~diffinfer.calibration.config.StudyConfig` and
:func:`~diffinfer.calibration.study.run_study`, whose errors the command line words with its
flags."""


@contextlib.contextmanager
def _flag_names() -> Iterator[None]:
    """Re-word an InputError that starts with a study value's name with its flag
    (``n_maps must ...`` -> ``--n-maps must ...``)."""
    try:
        yield
    except InputError as exc:
        text = str(exc)
        name = text.split(" ", 1)[0]
        if name in STUDY_FLAGS:
            raise InputError("--" + name.replace("_", "-") + text[len(name) :]) from None
        raise


def report_table(report: dict) -> str:
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


def cmd_recalibrate(args: argparse.Namespace) -> int:

    from diffinfer.calibration.config import STUDY_FILE
    from diffinfer.calibration.results import read_results
    from diffinfer.io import read_json
    from diffinfer.likelihoods.temperature import (
        check_same_model,
        fit_temperature,
        store_temperature,
    )

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
