"""Train the simulation-based references of a CAMELS-format data set (docs/nbody.md).

On the training split (the same cosmology split as the diffusion models: fractions 0.7 /
0.15 / 0.15, seed 0):

- the neural posterior estimators (sbi) on P(k) + a CNN embedding and on P(k) alone,
  written as ``models/<name>-npe`` and ``<name>-npe-power`` (safetensors + card);
- the Gaussian power-spectrum likelihood, written as ``<name>-power.npz`` beside them.

Resumable: a reference already written is kept (delete its directory to retrain).

    python scripts/train_references.py --data data/nbody64 --name nbody64 --threads 1

``--members K`` trains an ensemble instead: K flows of one summary with seeds 0..K-1,
each written to ``models/<name>-<kind>-ensemble/member-<seed>`` as it finishes, and the
ensemble's card once all K exist. A member's training state is checkpointed every 5
minutes (``.member-<seed>.state.safetensors`` beside them): the same command continues an
interrupted member. ``--seeds`` picks the members one process trains, so that
two processes can share the work (the last to finish writes the card; a rerun without
``--seeds`` writes it too):

    python scripts/train_references.py --only npe-power --members 5 --threads 1
    python scripts/train_references.py --only npe --members 4 --seeds 0 2 --threads 1 &
    python scripts/train_references.py --only npe --members 4 --seeds 1 3 --threads 1
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
    p.add_argument(
        "--members",
        type=int,
        default=None,
        help="train an ensemble of this many flows (seeds 0..K-1) per NPE kind",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="with --members: the members this process trains (default all)",
    )
    args = p.parse_args()
    if args.seeds is not None and args.members is None:
        p.error("--seeds picks members of an ensemble: give --members")
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffinfer.likelihoods.npe_training import train_npe
    from diffinfer.likelihoods.spectrum import PowerSpectrumLikelihood

    density, theta, meta = training_split(args.data)
    field = FieldConfig.from_dict(meta["config"])
    data = {"root": str(args.data.relative_to(ROOT) if args.data.is_relative_to(ROOT)
                        else args.data),
            "simulator": meta["simulator"], "config": meta["config"], "seed": meta.get("seed"),
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
        if args.members is not None:
            train_ensemble(args, kind, summary, density, theta, field, data)
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


def train_ensemble(args, kind, summary, density, theta, field, data) -> None:
    """Train the missing members of one ensemble, then write its card once all exist."""
    from diffinfer.likelihoods.npe import NPEEnsemble, NPEReference
    from diffinfer.likelihoods.npe_training import train_npe

    out = args.out / f"{args.name}-{kind}-ensemble"
    if (out / "card.json").is_file():
        print(f"{out} exists; kept")
        return
    for seed in args.seeds if args.seeds is not None else range(args.members):
        member = out / f"member-{seed}"
        if (member / "card.json").is_file():
            print(f"{member} exists; kept")
            continue
        state = out / f".member-{seed}.state.safetensors"

        def log(line: str, s: int = seed) -> None:
            print(f"member {s}: {line}", flush=True)

        ref = train_npe(density, theta, field, summary=summary, max_epochs=args.max_epochs,
                        seed=seed, data=data, checkpoint=state, log=log)  # fmt: skip
        ref.card["name"] = f"{out.name}/{member.name}"
        ref.save(member)
        state.unlink(missing_ok=True)
        print(f"wrote {member}: {json.dumps(ref.card['training'])}", flush=True)
    dirs = [out / f"member-{seed}" for seed in range(args.members)]
    if all((d / "card.json").is_file() for d in dirs):
        members = [NPEReference.load(d) for d in dirs]
        NPEEnsemble.from_members(members, out.name).save(out)
        print(f"wrote {out} ({args.members} members)")


if __name__ == "__main__":
    main()
