#!/usr/bin/env bash
# The int8 export fixes, one at a time, on finished runs (their trained final student, their
# config, split and data): all-integer head without centring (the exporter before the fix),
# centring only, float head only, both (the default). Writes $OUT/RUN/VARIANT/ (the .tflite
# files and export.json) and prints one line per variant. About 40 s per variant on 2 cores.
# Usage, from the repository root with kdskin installed:
#   experiments/2026-12/int8_ablation.sh [RUN_DIR...]      (default: runs/cpu runs/cpu_seed1 runs/cpu_seed2)
set -euo pipefail
OUT=${OUT:-runs/int8_ablation}
RUNS=("$@"); [[ ${#RUNS[@]} -gt 0 ]] || RUNS=(runs/cpu runs/cpu_seed1 runs/cpu_seed2)
declare -A VARIANTS=(
  [1_integer_head]="--set export.centre_input=false --set export.int8_head=int8"
  [2_centred]="--set export.centre_input=true --set export.int8_head=int8"
  [3_float_head]="--set export.centre_input=false --set export.int8_head=float"
  [4_centred_float_head]="--set export.centre_input=true --set export.int8_head=float"
)
for run in "${RUNS[@]}"; do
  for variant in $(printf '%s\n' "${!VARIANTS[@]}" | sort); do
    dir="$OUT/$(basename "$run")/$variant"
    mkdir -p "$(dirname "$dir")"
    # shellcheck disable=SC2086
    kdskin export --config "$run/config.yaml" --model "$run/models/student_multi_fusion.keras" \
      --out "$dir" ${VARIANTS[$variant]} > "$dir.log" 2>&1 || { cat "$dir.log"; exit 1; }
    python - "$dir/export.json" "$(basename "$run")" "$variant" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
k, q = e["evaluation"]["keras"], e["evaluation"]["tflite"]["int8"]
print(f"{sys.argv[2]:10s} {sys.argv[3]:22s} keras acc {k['accuracy']:.4f} F1 {k['macro_f1']:.4f} | "
      f"int8 acc {q['accuracy']:.4f} F1 {q['macro_f1']:.4f} | drop acc "
      f"{(k['accuracy'] - q['accuracy']) * 100:+.2f} pt F1 {(k['macro_f1'] - q['macro_f1']) * 100:+.2f} pt"
      f" | agreement {q['agreement']:.4f} ties {q['top1_ties']} | within: {e['int8_within_tolerance']}")
PY
  done
done
