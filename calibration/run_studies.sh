#!/usr/bin/env bash
# The standard coverage studies whose reports and figures are committed here
# (docs/calibration.md reads them). Each study resumes where it stopped; per-map results
# (calibration/*/results/) are not committed, except nbody64-test's (docs/nbody.md). Run from the repository root:
#   bash calibration/run_studies.sh [oracle|network|default|tempered|noise|nbody|all]
# Sizes are set by the cost on 2 CPU cores: an oracle posterior with the full VLB takes
# about 6 s (the oracle likelihood runs in Fourier space), a network posterior with the
# 64-timestep VLB about 50 s.
set -euo pipefail
DI=${DI:-.venv/bin/diffinfer}
WHAT=${1:-all}
COMMON=(--workers 2 --n-draws 500 --no-progress)

if [[ $WHAT == oracle || $WHAT == all ]]; then
  # the exact denoiser with the full VLB (all 1,000 terms), against the exact and the
  # power-spectrum posteriors, 200 simulated maps
  $DI calibrate --model oracle --likelihood vlb --n-timesteps 0 --n-maps 200 \
    "${COMMON[@]}" --out calibration/oracle-vlb
fi

if [[ $WHAT == network || $WHAT == all ]]; then
  NET=(--model lognormal64 --data data/lognormal64 --likelihood vlb --n-timesteps 64
       --set precision=bf16)
  # calibration split (validation cosmologies): fit the temperature, store it in the card
  $DI calibrate "${NET[@]}" --split validation --n-maps 6 --analyses diffusion \
    --temperature 1 "${COMMON[@]}" --out calibration/lognormal64-calibration
  $DI recalibrate calibration/lognormal64-calibration --store --model lognormal64
  # test split at temperature 1; the recalibrated coverage on these maps follows from the
  # fitted temperature (docs/results.md; an exact rerun is a second study with the card's
  # temperature, omitted here for time)
  $DI calibrate "${NET[@]}" --n-maps 8 --temperature 1 "${COMMON[@]}" \
    --out calibration/lognormal64-test
  # L_0 alone
  $DI calibrate --model lognormal64 --data data/lognormal64 --likelihood l0 --n-maps 8 \
    --analyses diffusion --temperature 1 "${COMMON[@]}" --out calibration/lognormal64-l0
fi

if [[ $WHAT == default || $WHAT == all ]]; then
  # the default posterior of lognormal64 (VLB with the Wiener-filter control variate, 8
  # timesteps of the fitted proposal, located grid): temperature on 100 calibration-split
  # maps, then 500 test-split maps against the exact and power-spectrum posteriors
  $DI calibrate --model lognormal64 --data data/lognormal64 --split validation --n-maps 100 \
    --analyses diffusion,exact --temperature 1 "${COMMON[@]}" \
    --out calibration/lognormal64-cv-calibration
  $DI recalibrate calibration/lognormal64-cv-calibration
  $DI calibrate --model lognormal64 --data data/lognormal64 --n-maps 500 "${COMMON[@]}" \
    --out calibration/lognormal64-cv-test
  .venv/bin/python calibration/against_exact.py calibration/lognormal64-cv-test
fi

if [[ $WHAT == tempered || $WHAT == all ]]; then
  # the same likelihood squared (temperature 0.5): the study must flag it overconfident
  $DI calibrate --model oracle --likelihood vlb --n-timesteps 0 --n-maps 200 \
    --analyses diffusion --temperature 0.5 "${COMMON[@]}" --out calibration/oracle-vlb-tempered
fi

if [[ $WHAT == nbody || $WHAT == all ]]; then
  # N-body maps (docs/nbody.md). The references' own coverage: 500 test-split maps, and the
  # first map of each of the 150 test and 150 validation boxes pooled (independent maps)
  NB=(--data data/nbody64 --set spectrum=models/nbody64-power.npz)
  REF=(--model none "${NB[@]}" --analyses npe,npe-power,power)
  $DI calibrate "${REF[@]}" --n-maps 500 "${COMMON[@]}" --out calibration/nbody64-references
  $DI calibrate "${REF[@]}" --split validation --n-maps 150 "${COMMON[@]}" \
    --out calibration/nbody64-references-validation
  .venv/bin/python calibration/nbody_comparison.py calibration/nbody64-references
  .venv/bin/python calibration/nbody_comparison.py calibration/nbody64-references --one-per-box \
    --pool calibration/nbody64-references-validation --name one-per-box
  # nbody64's likelihood temperature, fitted on 300 validation-split maps (the median of
  # d^2: one map far from its truth dominates the mean), stored in its card
  $DI calibrate --model nbody64 --data data/nbody64 --split validation --n-maps 300 \
    --analyses diffusion --temperature 1 "${COMMON[@]}" --out calibration/nbody64-calibration
  $DI recalibrate calibration/nbody64-calibration --estimator median --store --model nbody64
  # the comparison on test-split maps: the diffusion posterior at temperature 1 (200 maps)
  # and at the card's held-out temperature (320), beside NPE (P(k) + CNN), NPE (P(k)) and
  # the Gaussian P(k) likelihood, with the information-gain tables
  ALL=(--analyses diffusion,npe,npe-power,power)
  $DI calibrate --model nbody64 "${NB[@]}" "${ALL[@]}" --n-maps 200 --temperature 1 \
    "${COMMON[@]}" --out calibration/nbody64-test
  $DI calibrate --model nbody64 "${NB[@]}" "${ALL[@]}" --n-maps 320 "${COMMON[@]}" \
    --out calibration/nbody64-tempered-test
  .venv/bin/python calibration/nbody_comparison.py calibration/nbody64-test
  .venv/bin/python calibration/nbody_comparison.py calibration/nbody64-tempered-test
  .venv/bin/python calibration/nbody_comparison.py calibration/nbody64-tempered-test \
    --one-per-box --name one-per-box
fi
