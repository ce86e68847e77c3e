#!/usr/bin/env bash
# Sine regression with the gradient-agreement paper's settings (10 support points, 5 inner
# steps, MLP 1-64-64-1, 1000 held-out tasks from the fixed evaluation stream, seed 0):
# uniform vs agreement weighting for Reptile and for MAML, then one table.
# CPU budget: about 10 minutes on 2 cores (30,000 iterations of 10-35 ms each).
# The paper's numbers (Reptile 0.13, GA 0.08)
# come from far longer training; pass more iterations to approach them, e.g.
#   scripts/sine_comparison.sh train.iterations=30000
set -euo pipefail
out=${METARUN_OUT:-outputs/sine-comparison}
metarun -m algo=reptile weighting=uniform,agreement train.iterations=10000 \
  train.eval_every=1000 hydra.sweep.dir="$out/reptile" "$@"
metarun -m algo=maml weighting=uniform,agreement train.iterations=5000 \
  train.eval_every=1000 hydra.sweep.dir="$out/maml" "$@"
metarun-table "$out/reptile" "$out/maml" --out "$out"
