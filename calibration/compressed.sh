#!/usr/bin/env bash
# NPE on the N-body diffusion model's compression of each map (docs/nbody.md, "The diffusion
# model as a compressor"). Every step resumes where it stopped. Run from the repository root
# after calibration/references.sh simulate and train:
#   bash calibration/compressed.sh [compress|train|fresh|all]
# compress: nbody64's located maximum and Gauss-Newton covariance of two maps of each box
#   it was not trained on: the 300 validation and test boxes of data/nbody64 and the 600 of
#   data/nbody64-fresh2 (about 1 s a map on one core of a 2-core AMD EPYC; the first map of
#   every box first);
# train: models/nbody64-npe-diffusion-ensemble, an ensemble of 4 flows on P(k) + that compression;
# fresh: its coverage and information on the 400 boxes of data/nbody64-fresh, one map each
#   (a seed used for no training and no choice), beside NPE on P(k) + CNN and the Gaussian
#   P(k) likelihood on the same maps.
set -euo pipefail
DI=${DI:-.venv/bin/diffinfer}
PY=${PY:-.venv/bin/python}
WHAT=${1:-all}
MEMBERS=${MEMBERS:-4}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

if [[ $WHAT == compress || $WHAT == all ]]; then
  mkdir -p runs/compressed
  for per in 1 2; do  # breadth first: one map of every box, then the second
    $PY scripts/compress_maps.py --data data/nbody64 --split validation+test \
      --maps-per-box $per --out runs/compressed/nbody64-valtest.npz
    $PY scripts/compress_maps.py --data data/nbody64-fresh2 --split all \
      --maps-per-box $per --out runs/compressed/nbody64-fresh2.npz
  done
fi

if [[ $WHAT == train || $WHAT == all ]]; then
  $PY scripts/train_references.py --only npe-diffusion --members "$MEMBERS" --threads 1 \
    --batch-size 64 \
    --compressed runs/compressed/nbody64-valtest.npz runs/compressed/nbody64-fresh2.npz
fi

if [[ $WHAT == fresh || $WHAT == all ]]; then
  $DI calibrate --model none --data data/nbody64-fresh --split all --n-maps 400 \
    --analyses npe-diffusion,npe,power --n-draws 500 --no-progress \
    --set spectrum=models/nbody64-power.npz --workers "${WORKERS:-1}" \
    --out calibration/nbody64-npe-diffusion-fresh
  $PY calibration/nbody_comparison.py calibration/nbody64-npe-diffusion-fresh
fi
