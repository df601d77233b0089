"""Record the validation results of docs/results.md in the shipped model card.

Reads the emulator validation (docs/results/emulator_validation.json) and the coverage
studies of the model (calibration/lognormal64-*/report.json) and writes their headline
numbers into ``metrics`` of diffinfer/models/lognormal64/card.json (atomically, through
``update_card``; the weights and their checksum are untouched).

    python scripts/update_card_metrics.py
"""

from __future__ import annotations

import json
from pathlib import Path

from diffinfer.calibration.report import agreement
from diffinfer.calibration.study import load_results
from diffinfer.diffusion.checkpoint import CARD_FILE, resolve_model_dir, update_card
from diffinfer.io import read_json

STUDIES = {
    "vlb64": "calibration/lognormal64-test",
    "l0": "calibration/lognormal64-l0",
}


def headline(rep: dict) -> dict:
    out = {
        "n_maps": rep["n_maps"],
        "label": rep["label"],
        "hpd_max_deviation": rep["hpd_coverage"]["max_deviation"],
        "hpd_signed_area": rep["hpd_coverage"]["signed_area"],
        "tarp_max_deviation": rep["tarp"]["max_deviation"],
        "z_score": rep["z_score"],
        "calibrated": rep["calibrated"],
    }
    if rep.get("vs_exact"):
        out["vs_exact"] = rep["vs_exact"]
    return out


def main() -> None:
    path = resolve_model_dir("lognormal64") / CARD_FILE
    card = read_json(path)
    metrics = card.setdefault("metrics", {})
    emu = Path("docs/results/emulator_validation.json")
    if emu.is_file():
        metrics["emulator"] = {"source": "scripts/emulator_validation.py",
                               **json.loads(emu.read_text())["summary"]}  # fmt: skip
    likelihood = {}
    for key, folder in STUDIES.items():
        report = Path(folder) / "report.json"
        if report.is_file():
            likelihood[key] = headline(read_json(report)["analyses"]["diffusion"])
    # the L_0 study ran the same test maps without the exact analysis: compare it with the
    # exact posteriors of the VLB study
    exact = load_results(STUDIES["vlb64"], "exact")
    for key in ("l0",):
        if key in likelihood and exact:
            likelihood[key]["vs_exact"] = agreement(load_results(STUDIES[key], "diffusion"),
                                                    exact)  # fmt: skip
    if likelihood:
        metrics["likelihood"] = {"source": "bash calibration/run_studies.sh network",
                                 **likelihood}  # fmt: skip
    update_card(path.parent, {"metrics": metrics})
    print(f"updated {path}: {sorted(metrics)}")


if __name__ == "__main__":
    main()
