"""Train the simulation-based references of a CAMELS-format data set (docs/nbody.md).

On the training split (the same cosmology split as the diffusion models: fractions 0.7 /
0.15 / 0.15, seed 0):

- the neural posterior estimators (sbi) on P(k) + a CNN embedding and on P(k) alone,
  written as ``models/<name>-npe`` and ``<name>-npe-power`` (safetensors + card);
- the Gaussian power-spectrum likelihood, written as ``<name>-power.npz`` beside them.

Resumable: a reference already written is kept (delete its directory to retrain).

    python scripts/train_references.py --data data/nbody64 --name nbody64 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from diffinfer.data.camels import CamelsMaps
from diffinfer.fields.grid import FieldConfig
from diffinfer.io import read_json

ROOT = Path(__file__).resolve().parents[1]


def training_split(data: Path, split: str = "train") -> tuple[np.ndarray, np.ndarray, dict]:
    meta = read_json(data / "dataset.json", what="data set description")
    maps = CamelsMaps.open(data, field=meta["field"], suite=meta["suite"], set_name=meta["set"],
                           maps_per_cosmology=meta["maps_per_cosmology"])  # fmt: skip
    idx = maps.split_maps(split, (0.7, 0.15, 0.15), seed=0)
    density, theta = maps.load(idx)
    return density, theta, meta


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "data" / "nbody64")
    p.add_argument("--name", default="nbody64")
    p.add_argument("--out", type=Path, default=ROOT / "models")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-epochs", type=int, default=200)
    p.add_argument("--only", choices=("npe", "npe-power", "power"), action="append")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffinfer.likelihoods.npe import train_npe
    from diffinfer.likelihoods.spectrum import PowerSpectrumLikelihood

    density, theta, meta = training_split(args.data)
    field = FieldConfig.from_dict(meta["config"])
    data = {"root": str(args.data.relative_to(ROOT) if args.data.is_relative_to(ROOT)
                        else args.data),
            "simulator": meta["simulator"], "config": meta["config"],
            "split": {"fractions": [0.7, 0.15, 0.15], "seed": 0, "by": "cosmology",
                      "used": "train"},
            "n_maps": len(density)}  # fmt: skip
    print(f"{len(density)} training maps of {args.data}")
    todo = args.only or ["power", "npe-power", "npe"]
    if "power" in todo:
        path = args.out / f"{args.name}-power.npz"
        if not path.is_file():
            start = time.perf_counter()
            PowerSpectrumLikelihood.fit(density, theta, field).save(path)
            print(f"wrote {path} ({time.perf_counter() - start:.0f} s)")
    for kind, summary in (("npe-power", "power"), ("npe", "power+cnn")):
        if kind not in todo:
            continue
        out = args.out / f"{args.name}-{kind}"
        if (out / "card.json").is_file():
            print(f"{out} exists; kept")
            continue
        ref = train_npe(density, theta, field, summary=summary, max_epochs=args.max_epochs,
                        seed=0, data=data)  # fmt: skip
        ref.card["name"] = out.name
        ref.save(out)
        print(f"wrote {out}: {json.dumps(ref.card['training'])}")


if __name__ == "__main__":
    main()
