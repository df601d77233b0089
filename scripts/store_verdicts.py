"""Record the verdicts of the committed calibration studies in the shipped model cards.

    python scripts/store_verdicts.py

Each shipped model gets the verdict of its diffusion analysis from every committed study
of it (one entry per term set and temperature; a later study of the same setting replaces
an earlier one), which :func:`diffinfer.posterior` turns into a warning where the setting
in use is not ``calibrated``.
"""

from __future__ import annotations

import os
from pathlib import Path

from diffinfer.calibration.verdicts import store_verdict, verdict_entry
from diffinfer.io import read_json

ROOT = Path(__file__).resolve().parents[1]
# oldest first: a later study of the same setting replaces the earlier one
STUDIES = {
    "lognormal64": ["lognormal64-test", "lognormal64-fast-test", "lognormal64-cv-test"],
    "nbody64": ["nbody64-test", "nbody64-tempered-test"],
}


def main() -> None:
    os.chdir(ROOT)  # the cards name their studies relative to the repository
    for model, studies in STUDIES.items():
        for name in studies:
            study = Path("calibration") / name
            report = read_json(study / "report.json", what="calibration report")
            if "verdict" not in report.get("analyses", {}).get("diffusion", {}):
                print(f"{model}: {study} has no diffusion verdict (an older report): skipped")
                continue
            entry = verdict_entry(study)
            store_verdict(Path("models") / model, study)
            print(
                f"{model}: {entry['likelihood']} at temperature {entry['temperature']:.3g}: "
                f"{entry['verdict']} ({entry['n_maps']} maps) {entry['failed']}"
            )


if __name__ == "__main__":
    main()
