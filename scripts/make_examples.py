"""Ship a few held-out example maps with their true parameters (examples/lognormal64/).

Maps come from the test split of the default model's data set (cosmologies never seen in
training), spread over sigma_8.

    python scripts/make_examples.py [--data data/lognormal64] [--n 3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from diffinfer.data.camels import CamelsMaps
from diffinfer.diffusion import load_model
from diffinfer.io import write_json_atomic
from diffinfer.parameters import PARAM_NAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lognormal64")
    parser.add_argument("--data", default="data/lognormal64")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--out", default="examples/lognormal64")
    args = parser.parse_args()
    d = load_model(args.model).card["training"]["config"]["data"]
    data = CamelsMaps.open(args.data, suite=d["suite"], set_name=d["set"])
    test = data.split_cosmologies("test", tuple(d["fractions"]), seed=int(d["split_seed"]))
    test = test[np.argsort(data.params[test, 1])]
    pick = test[np.round(np.linspace(0.2, 0.8, args.n) * (len(test) - 1)).astype(int)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index = {}
    for i, c in enumerate(pick):
        map_index = int(c) * data.maps_per_cosmology
        density, theta = data.load(np.array([map_index]))
        name = f"map{i}.npy"
        np.save(out / name, density[0].astype(np.float64))
        index[name] = {"theta": dict(zip(PARAM_NAMES, map(float, theta[0]), strict=True)),
                       "source": f"{args.data} map {map_index} (test split)"}  # fmt: skip
    write_json_atomic(out / "examples.json", index)
    print(json.dumps(index, indent=1))


if __name__ == "__main__":
    main()
