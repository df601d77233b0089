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

``--only npe-diffusion`` trains the flow on P(k) and the diffusion likelihood's compression of
each map (``<name>-npe-diffusion``), on the maps that scripts/compress_maps.py compressed
(``--compressed``, one file per data set; maps the diffusion model was not trained on):

    python scripts/train_references.py --only npe-diffusion --members 4 --threads 1 \
        --compressed runs/compressed/nbody64-valtest.npz runs/compressed/nbody64-fresh2.npz
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
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--flow", default="nsf", help="the sbi flow: nsf (default) or maf")
    p.add_argument("--only", choices=("npe", "npe-power", "power", "npe-diffusion"),
                   action="append")  # fmt: skip
    p.add_argument("--compressed", type=Path, nargs="+", default=None,
                   help="with --only npe-diffusion: the compressed maps "
                        "(scripts/compress_maps.py)")  # fmt: skip
    p.add_argument("--maps-per-box", type=int, default=None,
                   help="with --compressed: the first this many maps of every box (default "
                        "all the files hold)")  # fmt: skip
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

    if args.only == ["npe-diffusion"]:
        if not args.compressed:
            p.error("--only npe-diffusion needs --compressed (scripts/compress_maps.py)")
        train_compressed(args)
        return
    if "npe-diffusion" in (args.only or []):
        p.error("train npe-diffusion on its own: --only npe-diffusion --compressed ...")
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
                        seed=0, data=data, batch_size=args.batch_size)  # fmt: skip
        ref.card["name"] = out.name
        ref.save(out)
        print(f"wrote {out}: {json.dumps(ref.card['training'])}")


def first_maps_per_box(boxes: np.ndarray, k: int) -> np.ndarray:
    """Which entries are among the first ``k`` of their box, in the order given."""
    keep = np.zeros(len(boxes), dtype=bool)
    seen: dict[int, int] = {}
    for i, box in enumerate(boxes.tolist()):
        seen[box] = seen.get(box, 0) + 1
        keep[i] = seen[box] <= k
    return keep


def compressed_maps(
    files: list[Path], maps_per_box: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The maps, parameters and compressions of scripts/compress_maps.py's files, and the
    description of their data sets (one source each) for the card.

    ``maps_per_box`` keeps the first that many compressed maps of every box (all if None):
    the files are written breadth first, one map of every box before the second.
    """
    from diffinfer.data.camels import CamelsMaps

    if maps_per_box is not None and maps_per_box < 1:
        raise SystemExit(f"--maps-per-box must be at least 1 (or left out for every map the "
                         f"files hold), got {maps_per_box}")  # fmt: skip
    density, theta, compressed, sources, meta = [], [], [], [], None
    for file in files:
        with np.load(file, allow_pickle=False) as f:
            got = {k: f[k] for k in f.files}
        root = Path(str(got["data"]))
        root = root if root.is_absolute() else ROOT / root
        meta_i = read_json(root / "dataset.json", what="data set description")
        if maps_per_box is not None:
            keep = first_maps_per_box(got["indices"] // meta_i["maps_per_cosmology"], maps_per_box)
            got["indices"], got["summaries"] = got["indices"][keep], got["summaries"][keep]
        if meta is not None and meta_i["config"] != meta["config"]:
            raise SystemExit(f"{file}: its maps are of another configuration than "
                             f"{files[0]}'s")  # fmt: skip
        meta = meta_i
        maps = CamelsMaps.open(root, field=meta["field"], suite=meta["suite"],
                               set_name=meta["set"],
                               maps_per_cosmology=meta["maps_per_cosmology"])  # fmt: skip
        rho, th = maps.load(got["indices"])
        density.append(rho)
        theta.append(th)
        compressed.append(got["summaries"])
        sources.append({"root": str(got["data"]), "seed": meta.get("seed"),
                        "split": str(got["split"]),
                        "n_maps": len(rho),
                        "n_cosmologies": len(np.unique(got["indices"]
                                                       // meta["maps_per_cosmology"])),
                        "compressed": file.name, "maps_per_box": maps_per_box})  # fmt: skip
    data = {"simulator": meta["simulator"], "config": meta["config"], "sources": sources,
            "n_maps": sum(s["n_maps"] for s in sources),
            "compressor": {"model": str(got["model"]), "seed": int(got["seed"])}}  # fmt: skip
    return np.concatenate(density), np.concatenate(theta), np.concatenate(compressed), data


def train_compressed(args) -> None:
    """The flow (or ensemble) on P(k) and the diffusion likelihood's compression."""
    from diffinfer.diffusion.checkpoint import load_model
    from diffinfer.likelihoods.npe_training import train_npe

    density, theta, compressed, data = compressed_maps(args.compressed, args.maps_per_box)
    field = FieldConfig.from_dict(data["config"])
    model = load_model(data["compressor"]["model"])
    extra = {"flow": args.flow, "compressor": model, "compressed": compressed,
             "compressor_seed": data["compressor"]["seed"]}  # fmt: skip
    print(f"{len(density)} compressed maps of {len(data['sources'])} data sets")
    if args.members is not None:
        train_ensemble(args, "npe-diffusion", "power+diffusion", density, theta, field, data,
                       **extra)  # fmt: skip
        return
    out = args.out / f"{args.name}-npe-diffusion"
    if (out / "card.json").is_file():
        print(f"{out} exists; kept")
        return
    ref = train_npe(density, theta, field, summary="power+diffusion", max_epochs=args.max_epochs,
                    seed=0, data=data, batch_size=args.batch_size, **extra)  # fmt: skip
    ref.card["name"] = out.name
    ref.save(out)
    print(f"wrote {out}: {json.dumps(ref.card['training'])}")


def train_ensemble(args, kind, summary, density, theta, field, data, **extra) -> None:
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
                        seed=seed, data=data, checkpoint=state, log=log,
                        batch_size=args.batch_size, **extra)  # fmt: skip
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
