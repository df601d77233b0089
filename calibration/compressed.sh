#!/usr/bin/env bash
# NPE on the N-body diffusion model's compression of each map (docs/nbody.md, "The diffusion
# model as a compressor"). Every step resumes where it stopped. Run from the repository root
# after calibration/references.sh simulate and train:
#   bash calibration/compressed.sh [compress|choose|train|simulate|test|all]
# compress: nbody64's located maximum and Gauss-Newton covariance of three maps of each box
#   it was not trained on: the 300 validation and test boxes of data/nbody64 and the 600 of
#   data/nbody64-fresh2 (about 1 s a map on one core of a 2-core AMD EPYC; the first map of
#   every box first, then the second, then the third);
# choose: the flow's settings, on held-out boxes: flows trained on the 600 boxes of
#   data/nbody64-fresh2 judged on the 300 validation and test boxes of data/nbody64
#   (docs/data/npe_holdout/<variant>.json; a few minutes per variant): on their first map,
#   then MAF with two or three training maps per box on all three maps of each held-out box,
#   and a larger MAF, more boxes (one map of each box of data/nbody64-fresh and -fresh3)
#   and both, against the lean of the posterior means towards the prior's centre;
# train: models/nbody64-npe-diffusion-ensemble, an ensemble of 4 flows (MAF, the choice) on
#   P(k) + that compression of the first two maps of each box (1,800 maps);
# simulate: the test set, 1,000 boxes simulated with a seed never used before (20261210;
#   about 40 minutes on one core);
# test: its coverage and information there, one map per box, beside NPE on P(k) + CNN and
#   the Gaussian P(k) likelihood on the same maps; recorded in the ensemble's card.
# (The first test, on 400 boxes of seed 20261209 in data/nbody64-fresh3, is kept as a record
#   in calibration/nbody64-npe-diffusion-fresh3; docs/nbody.md gives its commands.)
set -euo pipefail
DI=${DI:-.venv/bin/diffinfer}
PY=${PY:-.venv/bin/python}
WHAT=${1:-all}
MEMBERS=${MEMBERS:-4}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

if [[ $WHAT == compress || $WHAT == all ]]; then
  mkdir -p runs/compressed
  for per in 1 2 3; do  # breadth first: one map of every box, then the second, the third
    $PY scripts/compress_maps.py --data data/nbody64 --split validation+test \
      --maps-per-box $per --out runs/compressed/nbody64-valtest.npz
    $PY scripts/compress_maps.py --data data/nbody64-fresh2 --split all \
      --maps-per-box $per --out runs/compressed/nbody64-fresh2.npz
  done
  # one map of each box of the two earlier test sets, for the held-out check of more boxes
  # (neither is a test set of what is trained on them)
  for set in fresh fresh3; do
    $PY scripts/compress_maps.py --data data/nbody64-$set --split all --maps-per-box 1 \
      --out runs/compressed/nbody64-$set.npz
  done
fi

if [[ $WHAT == choose || $WHAT == all ]]; then
  for variant in "baseline" "small --hidden 32 --transforms 3" "maf --flow maf" \
      "batch256 --batch-size 256" "members8 --members 8"; do
    set -- $variant
    tag=$1; shift
    $PY scripts/npe_holdout.py --train runs/compressed/nbody64-fresh2.npz \
      --test runs/compressed/nbody64-valtest.npz --tag "$tag" "$@"
  done
  for per in 2 3; do  # more training maps per box, judged on every held-out map
    $PY scripts/npe_holdout.py --train runs/compressed/nbody64-fresh2.npz \
      --test runs/compressed/nbody64-valtest.npz --flow maf --train-maps-per-box $per \
      --test-maps-per-box 3 --tag maf-train$per-test3
  done
  # the lean towards the prior's centre (TARP): a larger flow, more boxes, both
  MORE="runs/compressed/nbody64-fresh.npz runs/compressed/nbody64-fresh3.npz"
  HELD="--test runs/compressed/nbody64-valtest.npz --flow maf --train-maps-per-box 2 --test-maps-per-box 3"
  $PY scripts/npe_holdout.py --train runs/compressed/nbody64-fresh2.npz $HELD \
    --hidden 128 --transforms 8 --tag maf-large-train2-test3
  $PY scripts/npe_holdout.py --train runs/compressed/nbody64-fresh2.npz $MORE $HELD \
    --tag maf-1400boxes-test3
  $PY scripts/npe_holdout.py --train runs/compressed/nbody64-fresh2.npz $MORE $HELD \
    --hidden 128 --transforms 8 --tag maf-large-1400boxes-test3
  $PY scripts/npe_holdout.py --train runs/compressed/nbody64-fresh2.npz $MORE $HELD \
    --hidden 96 --transforms 6 --tag maf-mid-1400boxes-test3
fi

if [[ $WHAT == train || $WHAT == all ]]; then
  $PY scripts/train_references.py --only npe-diffusion --members "$MEMBERS" --threads 1 \
    --batch-size 64 --flow maf --maps-per-box 2 \
    --compressed runs/compressed/nbody64-valtest.npz runs/compressed/nbody64-fresh2.npz
fi

if [[ $WHAT == simulate || $WHAT == all ]]; then
  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
    $DI simulate --simulator nbody --out data/nbody64-fresh4 --seed 20261210 \
    --n-cosmologies 1000 --no-progress
fi

if [[ $WHAT == test || $WHAT == all ]]; then
  $DI calibrate --model none --data data/nbody64-fresh4 --split all --n-maps 1000 \
    --analyses npe-diffusion,npe,power --n-draws 500 --no-progress \
    --set spectrum=models/nbody64-power.npz --workers "${WORKERS:-1}" \
    --out calibration/nbody64-npe-diffusion-fresh4
  $PY calibration/nbody_comparison.py calibration/nbody64-npe-diffusion-fresh4 \
    --record nbody64-npe-diffusion-ensemble
fi
