#!/usr/bin/env bash
# Reproduce docs/RESULTS.md: every run behind it, one after the other (2 CPU cores: about 3 h),
# then the document itself. Usage, from the repository root with kdskin installed:
#   tools/reproduce_results.sh [HAM10000_DIR]     (default: ../shared/data/ham10000)
# Each step is skipped when its run directory already has a report.md, so an interrupted
# reproduction continues where it stopped (an interrupted run itself: kdskin run --resume).
set -euo pipefail
DATA=${1:-../shared/data/ham10000}
RUNS=${RUNS:-runs}
mkdir -p "$RUNS"

run() {  # run NAME ARGS...: one kdskin run into $RUNS/NAME, logged to $RUNS/NAME.log
  local name=$1; shift
  if [[ -f "$RUNS/$name/report.md" ]]; then echo "skip $name (done)"; return; fi
  echo "== $name: kdskin run $*"
  kdskin run --data-dir "$DATA" --out "$RUNS/$name" "$@" > "$RUNS/$name.log" 2>&1
}

# 1. The whole pipeline on the lesion-grouped split (training seed 42): the main table,
#    export, benchmark, explanations. Within 60 minutes on 2 cores.
run cpu --config configs/cpu.yaml
# 2. Faithfulness of the explanations of the final student on 49 test images.
if [[ ! -f "$RUNS/explain_cpu/faithfulness.json" ]]; then
  echo "== explain_cpu"
  kdskin explain --config configs/cpu.yaml \
    --model "$RUNS/cpu/models/student_multi_fusion.keras" --method all --evaluate \
    --out "$RUNS/explain_cpu" > "$RUNS/explain_cpu.log" 2>&1
fi
# 3. Seeds: the student alone and the final distilled student again (same split, same
#    teacher), so a KD gain can be told from seed noise.
for seed in 1 2; do
  run "cpu_seed$seed" --config configs/cpu.yaml --teacher "$RUNS/cpu/models/teacher.keras" \
    --set train.seed=$seed --set "distill.stages=[baseline,multi_fusion]" \
    --set bench.enabled=false --set explain.enabled=false
done
# 4. The paper's LEAKY protocol (every class augmented to 850 images, the subset's total, then
#    split at random), the same configuration and every stage: the inflation it causes.
run cpu_leaky --config configs/cpu.yaml --set data.protocol=paper \
  --set data.paper_per_class=850 --set bench.enabled=false --set explain.enabled=false
# 5. Fusion-head ablation: the final stage with the paper's concat head instead of the
#    residual one (same teacher, same seed).
run cpu_concat --config configs/cpu.yaml --teacher "$RUNS/cpu/models/teacher.keras" \
  --set student.fusion=concat --set "distill.stages=[multi_fusion]" \
  --set export.enabled=false --set bench.enabled=false --set explain.enabled=false
# 6. int8-friendliness: the same final stage with keras.applications' EfficientNetB0 (swish,
#    squeeze-excite) instead of the Lite branch; compare its int8 drop in the export check.
run cpu_effnet_standard --config configs/cpu.yaml --teacher "$RUNS/cpu/models/teacher.keras" \
  --set student.efficientnet_variant=standard --set "distill.stages=[multi_fusion]" \
  --set bench.enabled=false --set explain.enabled=false
# 7. The document (runs that are missing are left out of it with a warning).
report=()
for name in cpu cpu_seed1 cpu_seed2 cpu_concat cpu_effnet_standard cpu_leaky; do
  if [[ -f "$RUNS/$name/report.md" ]]; then report+=("$RUNS/$name")
  else echo "warning: $RUNS/$name has no finished run; left out of the document" >&2; fi
done
kdskin report "${report[@]}" --out docs/RESULTS.md --results-dir docs/results \
  --explain "$RUNS/explain_cpu"
# 8. The int8 export fixes one at a time on the three seeds' students (printed; quoted in
#    tflite/README.md).
tools/int8_ablation.sh "$RUNS/cpu" "$RUNS/cpu_seed1" "$RUNS/cpu_seed2"
