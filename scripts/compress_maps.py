"""Compress maps of a CAMELS-format data set with a diffusion model (docs/nbody.md).

Each map becomes the diffusion likelihood's located maximum and Gauss-Newton covariance
(:func:`diffinfer.likelihoods.compression.compress`), the summaries on which the NPE
reference ``<model>-npe-diffusion`` is trained (scripts/train_references.py --only
npe-diffusion). The maps are taken one per box first, then the next map of every box, up to
``--maps-per-box``; the summaries are written atomically every ``--every`` maps, and the
same command continues an interrupted run:

    python scripts/compress_maps.py --model nbody64 --data data/nbody64-fresh2 --split all \
        --maps-per-box 2 --out runs/compressed/nbody64-fresh2.npz

Use maps the model was not trained on: on its own training maps the compression is tighter
than on new maps, and a flow trained on them would be overconfident.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from diffinfer.data.camels import CamelsMaps
from diffinfer.io import read_json, write_npz_atomic


def chosen_maps(data: Path, split: str, per_box: int) -> tuple[CamelsMaps, np.ndarray]:
    """The data set and the map indices to compress: the split's boxes (the diffusion
    models' split: fractions 0.7 / 0.15 / 0.15, seed 0; or ``all``), the first map of every
    box, then the second, ... up to ``per_box``."""
    meta = read_json(data / "dataset.json", what="data set description")
    per = int(meta["maps_per_cosmology"])
    maps = CamelsMaps.open(data, field=meta["field"], suite=meta["suite"], set_name=meta["set"],
                           maps_per_cosmology=per)  # fmt: skip
    if split == "all":
        idx = np.arange(maps.n_cosmologies * per)
    else:
        idx = np.concatenate([maps.split_maps(s, (0.7, 0.15, 0.15), seed=0)
                              for s in split.split("+")])  # fmt: skip
    boxes = np.sort(idx).reshape(-1, per)
    return maps, boxes[:, :per_box].T.ravel()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="nbody64")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="all", help="all, train, validation, test, or a sum "
                   "such as validation+test")  # fmt: skip
    p.add_argument("--maps-per-box", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="the likelihood's seed")
    p.add_argument("--every", type=int, default=25)
    p.add_argument("--limit", type=int, default=None, help="compress at most this many maps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from diffinfer.diffusion.checkpoint import load_model
    from diffinfer.likelihoods.compression import compress, compressor_card

    model = load_model(args.model)
    entry = compressor_card(model, args.seed)
    maps, indices = chosen_maps(args.data, args.split, args.maps_per_box)
    indices = indices[: args.limit]
    done = np.zeros((0, 6), np.float32)
    if args.out.is_file():
        with np.load(args.out, allow_pickle=False) as old:
            same = (str(old["model"]) == entry["model"]
                    and str(old["weights_sha256"]) == str(entry["weights_sha256"])
                    and int(old["seed"]) == args.seed and str(old["data"]) == str(args.data)
                    and str(old["split"]) == args.split
                    and np.array_equal(old["indices"], indices[: len(old["indices"])]))  # fmt: skip
            if not same:
                raise SystemExit(f"{args.out} holds other summaries (model, seed, data or "
                                 "maps differ): delete it or give another --out")  # fmt: skip
            done = old["summaries"]
        print(f"resuming {args.out}: {len(done)} of {len(indices)} maps done", flush=True)
    start, before = time.perf_counter(), len(done)
    while len(done) < len(indices):
        chunk = indices[len(done) : len(done) + args.every]
        density, _ = maps.load(chunk)
        done = np.concatenate([done, compress(density, model, seed=args.seed)])
        theta = maps.params[indices[: len(done)] // maps.maps_per_cosmology, :2]
        write_npz_atomic(args.out, summaries=done, indices=indices[: len(done)], theta=theta,
                         model=entry["model"], weights_sha256=str(entry["weights_sha256"]),
                         seed=args.seed, data=str(args.data), split=args.split)  # fmt: skip
        rate = (time.perf_counter() - start) / max(1, len(done) - before)
        print(
            f"{len(done)} / {len(indices)} maps ({rate:.2f} s a map; "
            f"{int(done[:, 5].sum())} not located)",
            flush=True,
        )


if __name__ == "__main__":
    main()
