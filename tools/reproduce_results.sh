#!/usr/bin/env bash
# Reproduce docs/RESULTS.md: every run behind it, one after the other, then the document itself.
# Usage, from the repository root with kdskin installed:
#   tools/reproduce_results.sh [HAM10000_DIR] [EXTERNAL_DIR]
# (defaults: ../shared/data/ham10000 and ../shared/data/isic2018_dev, the external set that is
# scored whole and never trained on). Each step is skipped when its run directory already has a
# report.md, so an interrupted reproduction continues where it stopped (an interrupted run
# itself: kdskin run --resume). 2 CPU cores: about 1 h for the cpu run, 1.5 h for the ablation.
set -euo pipefail
DATA=${1:-../shared/data/ham10000}
EXTERNAL=${2:-../shared/data/isic2018_dev}
RUNS=${RUNS:-runs}
mkdir -p "$RUNS"

run() {  # run NAME ARGS...: one kdskin run into $RUNS/NAME, logged to $RUNS/NAME.log
  local name=$1; shift
  if [[ -f "$RUNS/$name/report.md" ]]; then echo "skip $name (done)"; return; fi
  echo "== $name: kdskin run $*"
  kdskin run --data-dir "$DATA" --external "$EXTERNAL" --out "$RUNS/$name" "$@" \
    > "$RUNS/$name.log" 2>&1
}

# 1. What ships (configs/cpu.yaml, within 60 minutes on 2 cores): the teacher, the final
#    distilled student, calibration and decision rules, the int8 export and its check, the
#    external evaluation, the benchmark, explanations, MODEL_CARD.md.
run cpu --config configs/cpu.yaml
# 2. The ablation with the same budget and the cpu run's teacher: the paper's CNN, the strong
#    plain reference, the student alone, single- and multi-stage KD.
run cpu_ablation --config configs/cpu_ablation.yaml --teacher "$RUNS/cpu/models/teacher.keras"
# 3. The document, from both runs (they share the config name, so one table), followed by the
#    runs of the previous recipe (sqrt class weights, every stage in one run; kept as saved
#    metrics.json files: the leaky-protocol inflation, seeds, fusion-head and EfficientNet
#    comparisons). They were made by the previous version of this script.
report=()
for name in cpu cpu_ablation; do
  if [[ -f "$RUNS/$name/report.md" ]]; then report+=("$RUNS/$name")
  else echo "warning: $RUNS/$name has no finished run; left out of the document" >&2; fi
done
previous=(docs/results/prev_cpu.json docs/results/prev_cpu_seed1.json
          docs/results/prev_cpu_seed2.json docs/results/prev_cpu_concat.json
          docs/results/prev_cpu_effnet_standard.json docs/results/prev_cpu_leaky.json)
kdskin report "${report[@]}" "${previous[@]}" --out docs/RESULTS.md --results-dir docs/results \
  --explain docs/results/explain/explain_cpu.json
