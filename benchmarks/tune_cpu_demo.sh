#!/usr/bin/env bash
# Does the cpu-demo's GRPO stage lower the rating error, and do other GRPO settings do better?
# Tuned on the valid split: every variant starts from the same format-priming adapter (copied from
# a finished cpu-demo run, reused through its settings record), trains GRPO only, and is evaluated
# greedily on the same N valid pairs; the priming adapter and the run's own GRPO adapter are
# evaluated on those pairs too, then everything is compared pair by pair.
#   bash benchmarks/tune_cpu_demo.sh RUN_DIR [N_PAIRS]     # RUN_DIR: a finished cpu-demo run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUN=${1:?a finished cpu-demo run folder, e.g. runs/cpu-demo}
N=${2:-64}
OUT=runs/tune-cpu-demo
mkdir -p "$OUT"
eval_valid() {  # folder-to-write run adapter
  "$PY" -m kit.evaluate --run "$2" --adapter "$3" --split valid --limit "$N" --out "$1"
}
[ -f "$OUT/primed/metrics.json" ] || eval_valid "$OUT/primed" "$RUN" "$RUN/priming/adapter"
[ -f "$OUT/grpo-recipe/metrics.json" ] || eval_valid "$OUT/grpo-recipe" "$RUN" "$RUN/adapter"
variant() {  # name, overrides...
  local name=$1; shift
  local dir="$OUT/$name"
  if [ ! -f "$dir/adapter/adapter_config.json" ]; then
    mkdir -p "$dir" && cp -r "$RUN/priming" "$dir/"
    "$PY" -m kit.train --config cpu-demo "output_dir=$dir" budget.minutes=null evaluation.enabled=false "$@"
  fi
  [ -f "$dir/eval/valid/metrics.json" ] || eval_valid "$dir/eval/valid" "$dir" "$dir/adapter"
}
variant lr-2e-5 grpo.learning_rate=2.0e-5
variant temperature-1.0 grpo.temperature=1.0
"$PY" -m kit.evaluate compare "$OUT/primed" "$OUT/grpo-recipe" "$OUT/lr-2e-5/eval/valid" \
    "$OUT/temperature-1.0/eval/valid" --split valid \
    --labels "after priming" "GRPO as the recipe" "GRPO lr 2e-5" "GRPO temperature 1.0" --out "$OUT"
