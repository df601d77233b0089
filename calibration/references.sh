#!/usr/bin/env bash
# The N-body references and their coverage on independent boxes (docs/nbody.md,
# "References on independent boxes"). Every step resumes where it stopped. Run from the
# repository root:
#   bash calibration/references.sh [simulate|train|select|fresh|all]
# simulate: the training data (1,000 boxes, seed 0) and two test sets simulated with seeds
#   never used for training or selection: 400 boxes (seed 20261207) and 600 more (seed
#   20261208) (about 50, 20 and 30 minutes on one core of a 2-core AMD EPYC);
# train: the NPE ensembles (P(k): 5 flows, about 4 minutes; P(k) + CNN: CNN_MEMBERS (default
#   4, as shipped) flows in two processes, one thread each, 10–70 minutes per member (their
#   cards); a member's state is checkpointed every 5 minutes, so rerun to go on; to add
#   members to a finished ensemble, delete its card.json and rerun with a larger CNN_MEMBERS);
# select: the shipped and ensemble references on the held-out splits of the training data
#   (one map per box, 300 boxes), where the ensemble size is chosen;
# fresh: the same on the fresh boxes, one map each: the 400 boxes alone, and pooled with the
#   600 more (1,000 boxes): the coverage that is reported and recorded in the cards.
set -euo pipefail
DI=${DI:-.venv/bin/diffinfer}
PY=${PY:-.venv/bin/python}
WHAT=${1:-all}
CNN_MEMBERS=${CNN_MEMBERS:-4}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
COMMON=(--n-draws 500 --no-progress --set spectrum=models/nbody64-power.npz)

if [[ $WHAT == simulate || $WHAT == all ]]; then
  $DI simulate --simulator nbody --out data/nbody64 --no-progress &
  $DI simulate --simulator nbody --out data/nbody64-fresh --seed 20261207 \
    --n-cosmologies 400 --no-progress
  $DI simulate --simulator nbody --out data/nbody64-fresh2 --seed 20261208 \
    --n-cosmologies 600 --no-progress
  wait
fi

if [[ $WHAT == train || $WHAT == all ]]; then
  $PY scripts/train_references.py --only npe-power --members 5 --threads 1
  $PY scripts/train_references.py --only npe --members "$CNN_MEMBERS" \
    --seeds $(seq 0 2 $((CNN_MEMBERS - 1))) --threads 1 &
  $PY scripts/train_references.py --only npe --members "$CNN_MEMBERS" \
    --seeds $(seq 1 2 $((CNN_MEMBERS - 1))) --threads 1
  wait
  $PY scripts/train_references.py --only npe --members "$CNN_MEMBERS"  # the card
fi

# study NAME ANALYSES [--set npe=REFERENCE]: on the held-out splits (select) or the fresh
# boxes (fresh), one map per box
study() {
  local name=$1 analyses=$2; shift 2
  if [[ $WHAT == select || $WHAT == all ]]; then
    for split in validation test; do
      $DI calibrate --model none --data data/nbody64 --split $split --n-maps 150 \
        --analyses "$analyses" "${COMMON[@]}" "$@" --out "calibration/$name-$split"
    done
    $PY calibration/nbody_comparison.py "calibration/$name-validation" \
      --pool "calibration/$name-test" --name held-out
  fi
  if [[ $WHAT == fresh || $WHAT == all ]]; then
    $DI calibrate --model none --data data/nbody64-fresh --split all --n-maps 400 \
      --analyses "$analyses" "${COMMON[@]}" "$@" --out "calibration/$name-fresh"
    $DI calibrate --model none --data data/nbody64-fresh2 --split all --n-maps 600 \
      --analyses "$analyses" "${COMMON[@]}" "$@" --out "calibration/$name-fresh2"
    $PY calibration/nbody_comparison.py "calibration/$name-fresh"
    $PY calibration/nbody_comparison.py "calibration/$name-fresh" --name fresh-1000 \
      --pool "calibration/$name-fresh2" ${RECORD:+--record "$RECORD"}
  fi
}

# STUDIES picks the studies of select and fresh (default all three)
STUDIES=${STUDIES:-"references npe-power-ensemble npe-ensemble"}
if [[ $WHAT == select || $WHAT == fresh || $WHAT == all ]]; then
  for s in $STUDIES; do
    case $s in
      references) RECORD= study nbody64-references npe,npe-power,power ;;
      npe-power-ensemble) RECORD=nbody64-npe-power-ensemble study nbody64-npe-power-ensemble \
        npe-power,power --set npe=nbody64-npe-power-ensemble ;;
      # the four members' studies (calibration/nbody64-npe-ensemble-* hold the first two's)
      npe-ensemble) RECORD=nbody64-npe-ensemble study nbody64-npe-ensemble4 npe,power \
        --set npe=nbody64-npe-ensemble ;;
      *) echo "references.sh: unknown study $s" >&2; exit 2 ;;
    esac
  done
fi
