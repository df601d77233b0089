"""Choose the settings of the NPE on compressed maps on held-out boxes (docs/nbody.md).

Trains flows on P(k) + the diffusion compression of the boxes in ``--train`` (files of
scripts/compress_maps.py) and measures their coverage on the first map of every box in
``--test`` (the first ``--test-maps-per-box`` maps), from the flows themselves: each map's
HPD credibility of the truth is the fraction of ``--draws`` posterior draws denser than it
(the flows' exact density), the z-scores come from the draws' mean and sd, and the area is
det(cov)^(1/2) of the draws.
No test set is touched: the boxes in ``--test`` are the choice's validation set.
``--train-maps-per-box`` trains on the first that many compressed maps of every box (default
all the files hold). Several maps of one box share the box's truth; they are not independent
draws, but each is a fair test map, so coverage over them stays unbiased and less noisy.

    python scripts/npe_holdout.py --train runs/compressed/nbody64-fresh2.npz \
        --test runs/compressed/nbody64-valtest.npz --members 4 --tag baseline
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "calibration"))
from nbody_comparison import independent_checks, z_by_quartile
from train_references import compressed_maps

from diffinfer.calibration.metrics import uniformity_check
from diffinfer.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=Path, nargs="+", required=True)
    p.add_argument("--test", type=Path, nargs="+", required=True)
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--flow", default="nsf")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--transforms", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--train-maps-per-box", type=int, default=None)
    p.add_argument("--test-maps-per-box", type=int, default=1)
    p.add_argument("--tag", required=True)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "data" / "npe_holdout")
    args = p.parse_args()
    torch.set_num_threads(1)
    from diffinfer.diffusion.checkpoint import load_model
    from diffinfer.fields.grid import FieldConfig
    from diffinfer.likelihoods.npe import NPEEnsemble
    from diffinfer.likelihoods.npe_summaries import summarise
    from diffinfer.likelihoods.npe_training import train_npe

    density, theta, compressed, data = compressed_maps(args.train, args.train_maps_per_box)
    field = FieldConfig.from_dict(data["config"])
    model = load_model(data["compressor"]["model"])
    start = time.perf_counter()
    members = [
        train_npe(
            density,
            theta,
            field,
            summary="power+diffusion",
            flow=args.flow,
            hidden_features=args.hidden,
            num_transforms=args.transforms,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=seed,
            data=data,
            compressor=model,
            compressed=compressed,
            compressor_seed=data["compressor"]["seed"],
        )
        for seed in range(args.members)
    ]
    ref = members[0] if len(members) == 1 else NPEEnsemble.from_members(members, args.tag)
    trained = time.perf_counter() - start
    t_density, t_theta, t_compressed, _ = compressed_maps(args.test, args.test_maps_per_box)
    x = summarise(t_density, ref.card, t_compressed)
    truths = t_theta
    cred, z, area, results = [], [], [], []
    for i, (xi, truth) in enumerate(zip(x, truths, strict=True)):
        draws = ref.sample(args.draws, xi, seed=i)
        lp_draws = ref.log_prob(torch.as_tensor(draws), xi).numpy()
        lp_truth = ref.log_prob(torch.as_tensor(truth[None]), xi).numpy()[0]
        cred.append(float(np.mean(lp_draws > lp_truth)))
        mean, sd = draws.mean(0), draws.std(0, ddof=1)
        z.append((mean - truth) / sd)
        area.append(float(np.sqrt(np.linalg.det(np.cov(draws.T)))))
        results.append({"draws": draws, "truth": truth})
    z = np.array(z)
    hpd = uniformity_check(np.array(cred))
    n = len(z)
    out = {
        "tag": args.tag,
        "train": [str(f) for f in args.train],
        "test": [str(f) for f in args.test],
        "n_train_maps": len(density),
        "n_test_maps": n,
        "n_test_boxes": len(np.unique(truths, axis=0)),
        "settings": {
            "members": args.members,
            "flow": args.flow,
            "hidden": args.hidden,
            "transforms": args.transforms,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "draws": args.draws,
            "train_maps_per_box": args.train_maps_per_box,
            "test_maps_per_box": args.test_maps_per_box,
        },
        "best_epochs": [m.card["training"]["best_epoch"] for m in members],
        "train_seconds": round(trained, 1),
        "hpd_max_deviation": hpd["max_deviation"],
        "hpd_signed_area": hpd["signed_area"],
        "hpd_inside_band_99": hpd["inside_band_99"],
        "z_mean": z.mean(0).tolist(),
        "z_mean_se": (z.std(0, ddof=1) / np.sqrt(n)).tolist(),
        "z_std": z.std(0, ddof=1).tolist(),
        "z_std_se": (z.std(0, ddof=1) / np.sqrt(2 * (n - 1))).tolist(),
        "area_geometric_mean": float(np.exp(np.mean(np.log(area)))),
        # the conditional bias that TARP sees and the HPD curve does not
        "z_by_posterior_mean_quartile": {
            k: [round(q["z_mean"], 3) for q in v] for k, v in z_by_quartile(results).items()
        },
        "tarp_max_deviation": independent_checks(results, ref.prior)["tarp_max_deviation"],
    }
    print({k: v for k, v in out.items() if k not in ("train", "test")}, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / f"{args.tag}.json", out)


if __name__ == "__main__":
    main()
