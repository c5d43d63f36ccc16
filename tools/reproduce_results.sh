#!/usr/bin/env bash
# Reproduce docs/RESULTS.md: every run behind it, one after the other, then the document itself.
# Usage, from the repository root with kdskin installed with the pretrained extra:
#   tools/reproduce_results.sh [HAM10000_DIR] [EXTERNAL_DIR]
# (defaults: ../shared/data/ham10000, the 5,984-image subset of the previous recipe's runs, and
# ../shared/data/isic2018_dev, the external set that is scored whole and never trained on; the
# shipped recipe's runs read all of HAM10000 from $FULL, default ../shared/data/ham10000_full).
# Each step is skipped when its run directory already has a report.md, so an interrupted
# reproduction continues where it stopped (an interrupted run itself: kdskin run --resume).
# The document takes each run from $RUNS/NAME when it finished there, else from its saved
# metrics (docs/results/NAME.json). 2 CPU cores: about 26 min for the cpu teacher, 34 min for
# each seed of the student, about 2 h for the 96 px references, 4 h for the 64 px runs of step
# 0' to 0g; the previous recipes' runs (configs/previous/) about 16 h in all.
set -euo pipefail
DATA=${1:-../shared/data/ham10000}
EXTERNAL=${2:-../shared/data/isic2018_dev}
FULL=${FULL:-../shared/data/ham10000_full}
PREV=configs/previous  # the recipe shipped before the full-data one, as it was
RUNS=${RUNS:-runs}
mkdir -p "$RUNS"

run() {  # run NAME ARGS...: one kdskin run into $RUNS/NAME, logged to $RUNS/NAME.log (on $DATA,
         # or on $RUN_DATA when set: RUN_DATA=DIR run NAME ARGS...)
  local name=$1; shift
  if [[ -f "$RUNS/$name/report.md" ]]; then echo "skip $name (done)"; return; fi
  echo "== $name: kdskin run $*"
  kdskin run --data-dir "${RUN_DATA:-$DATA}" --external "$EXTERNAL" --out "$RUNS/$name" "$@" \
    > "$RUNS/$name.log" 2>&1
}

compare() {  # compare OUT.json MODEL AGAINST...: skipped when OUT.json exists
  local out=$1 model=$2; shift 2
  if [[ -f "$out" ]]; then echo "skip $out (done)"; return; fi
  kdskin evaluate --model "$model" --data "$EXTERNAL" --json "$out" --against "$@" \
    > "$RUNS/$(basename "${out%.json}").log" 2>&1
}

# 0. What ships (configs/cpu.yaml, within 60 minutes on 2 cores): all 10,015 HAM10000 images,
#    the teacher (a small ViT beside EfficientNet-Lite1 from ImageNet at 128 px, trained without
#    the shift augmentation; about 26 min), the final distilled student from an ImageNet
#    EfficientNet-Lite0 start at 96 px with Shades of Grey and the shift augmentation (about 26
#    min), calibration and decision rules with the melanoma operating point, the int8 export and
#    its check, the external evaluation with the shift suite, the benchmark, explanations,
#    MODEL_CARD.md (about 34 min with the teacher reused). Measured as separate runs, the teacher
#    first and then everything else with it reused (one `kdskin run --config configs/cpu.yaml`
#    does both in one go; the teacher does not depend on data.image_size: it decodes the split
#    at its own 128 px). Seeds 42, 43 and 44 of the student with the same teacher: the
#    headline's figures are a mean of three (seeds 42 and 43 were run before
#    trust.min_melanoma_recall was in the config and re-exported with it, below: the same fit a
#    fresh run makes from the same student). Then the ablation at the same input with the same
#    budget: the paper's CNN and the VGG-style CNN (one run), EfficientNet-Lite0 from ImageNet
#    alone (three seeds) and the student alone (two seeds), each as its own run (only that
#    model: --set switches).
RUN_DATA=$FULL run cpu_b1_teacher --config configs/cpu.yaml --set "distill.stages=[]"
b1_teacher=(--teacher "$RUNS/cpu_b1_teacher/models/teacher.keras")
RUN_DATA=$FULL run cpu_b1_px96 --config configs/cpu.yaml "${b1_teacher[@]}"
RUN_DATA=$FULL run cpu_b1_px96_seed43 --config configs/cpu.yaml "${b1_teacher[@]}" \
  --set train.seed=43
RUN_DATA=$FULL run cpu_b1_px96_seed44 --config configs/cpu.yaml "${b1_teacher[@]}" \
  --set train.seed=44
RUN_DATA=$FULL run cpu_b1_px96_ablation --config configs/cpu_ablation.yaml \
  --set teacher.enabled=false --set "distill.stages=[]" --set reference_effnet.enabled=false
for seed in 42 43 44; do
  name=cpu_b1_px96_ref_effnet; [[ $seed == 42 ]] || name+="_seed$seed"
  RUN_DATA=$FULL run "$name" --config configs/cpu_ablation.yaml --set teacher.enabled=false \
    --set "distill.stages=[]" --set baseline.enabled=false --set reference.enabled=false \
    --set train.seed=$seed
done
for seed in 42 43; do
  name=cpu_b1_px96_student_alone; [[ $seed == 42 ]] || name+="_seed$seed"
  RUN_DATA=$FULL run "$name" --config configs/cpu_ablation.yaml --set teacher.enabled=false \
    --set baseline.enabled=false --set reference.enabled=false \
    --set reference_effnet.enabled=false --set train.seed=$seed
done
# 0'. The same recipe with the student at 64 px (the paper's input; shipped until 2026-12-05,
#    runs cpu_b1*): three seeds with the same teacher (about 24 min each; seeds 42 and 43 were
#    trained before trust.melanoma_offset existed and re-exported with it: `kdskin export --run
#    RUN --set trust.melanoma_offset=balanced`, about 3 min each; what the same rule would do for
#    every model of these runs, references included: `python tools/melanoma_offset.py RUN...`),
#    and its ablation with the same teacher (the paper's CNN, both references, the student
#    alone). Every cpu.yaml / cpu_ablation.yaml run of steps 0' to 0g sets data.image_size=64
#    and leaves trust.min_melanoma_recall unset, as they were run.
px64=(--set data.image_size=64 --set trust.min_melanoma_recall=null)
RUN_DATA=$FULL run cpu_b1 --config configs/cpu.yaml "${b1_teacher[@]}" "${px64[@]}"
RUN_DATA=$FULL run cpu_b1_seed43 --config configs/cpu.yaml "${b1_teacher[@]}" "${px64[@]}" \
  --set train.seed=43
RUN_DATA=$FULL run cpu_b1_seed44 --config configs/cpu.yaml "${b1_teacher[@]}" "${px64[@]}" \
  --set train.seed=44
RUN_DATA=$FULL run cpu_b1_ablation --config configs/cpu_ablation.yaml "${b1_teacher[@]}" \
  "${px64[@]}"
# 0b. The full-data recipe shipped before it (configs/previous/full/: the 64 px ConvMixer
#    hybrid teacher from scratch, 6 epochs, its ViT exit distilled into the EfficientNet exit),
#    the whole pipeline in one run each (about 35 min), and its ablation.
PREV_FULL=configs/previous/full
RUN_DATA=$FULL run cpu_full --config "$PREV_FULL/cpu.yaml"
RUN_DATA=$FULL run cpu_full_seed43 --config "$PREV_FULL/cpu.yaml" --set train.seed=43
RUN_DATA=$FULL run cpu_full_ablation --config "$PREV_FULL/cpu_ablation.yaml" \
  --teacher "$RUNS/cpu_full/models/teacher.keras"
# 0b'. Two more seeds of the reference the distilled student is compared with most closely,
#    EfficientNet-Lite0 from ImageNet fine-tuned alone (the ablation config, only that model;
#    about 9 min each), so the headline's pretrained reference is a mean of three as well.
for seed in 43 44; do
  RUN_DATA=$FULL run "cpu_b1_ref_effnet_seed$seed" --config configs/cpu_ablation.yaml "${px64[@]}" \
    --set teacher.enabled=false --set "distill.stages=[]" --set baseline.enabled=false \
    --set reference.enabled=false --set train.seed=$seed
done
# 0b''. Two more seeds of the student alone (the fused student with cross-entropy only, no
#    teacher; the ablation config, only that model; about 17 min each), so the comparison that
#    says whether distillation helps is a mean of three on both sides.
for seed in 43 44; do
  RUN_DATA=$FULL run "cpu_b1_student_alone_seed$seed" --config configs/cpu_ablation.yaml "${px64[@]}" \
    --set teacher.enabled=false --set baseline.enabled=false --set reference.enabled=false \
    --set reference_effnet.enabled=false --set train.seed=$seed
done
# 0c. Paired differences on the external set, the same 300 images for every model
#    (kdskin evaluate --against: stratified paired bootstrap, 95%), into docs/results/compare/.
mkdir -p docs/results/compare
ablation="$RUNS/cpu_b1_ablation/models"
compare docs/results/compare/cpu_b1_int8.json "$RUNS/cpu_b1/tflite/model_int8.tflite" \
  "$ablation/reference_effnet.keras" "$ablation/reference_cnn.keras" \
  "$ablation/student_baseline.keras"
compare docs/results/compare/cpu_b1_seed43_int8.json \
  "$RUNS/cpu_b1_seed43/tflite/model_int8.tflite" "$ablation/reference_effnet.keras" \
  "$ablation/reference_cnn.keras" "$ablation/student_baseline.keras" \
  "$RUNS/cpu_full_seed43/tflite/model_int8.tflite"
compare docs/results/compare/cpu_b1_seed44_int8.json \
  "$RUNS/cpu_b1_seed44/tflite/model_int8.tflite" "$ablation/reference_effnet.keras" \
  "$ablation/reference_cnn.keras" "$ablation/student_baseline.keras"
compare docs/results/compare/cpu_b1_teacher.json "$RUNS/cpu_b1_teacher/models/teacher.keras" \
  "$ablation/student_baseline.keras" "$RUNS/cpu_full_ablation/models/student_baseline.keras" \
  "$ablation/reference_effnet.keras"
# 0d. Over-exposure (melanoma recall under the suite's `whiter` shift): the seed-42
#    student of step 0 with the same teacher and everything else equal, its colour layer
#    replaced by one that removes any per-channel affine change (data.colour_constancy:
#    standardise, auto_levels), and with Shades of Grey kept and the augmentation's
#    over-exposure range widened (augment.shift.whiten 0.5 instead of 0.3). About 26 min each.
RUN_DATA=$FULL run cpu_b1_standardise --config configs/cpu.yaml "${b1_teacher[@]}" "${px64[@]}" \
  --set data.colour_constancy=standardise
RUN_DATA=$FULL run cpu_b1_auto_levels --config configs/cpu.yaml "${b1_teacher[@]}" "${px64[@]}" \
  --set data.colour_constancy=auto_levels
RUN_DATA=$FULL run cpu_b1_whiten50 --config configs/cpu.yaml "${b1_teacher[@]}" "${px64[@]}" \
  --set augment.shift.whiten=0.5
# 0e. The KD temperature re-checked with this teacher: T = 4 instead of 10 for the
#    seed-42 student, everything else as step 0. About 22 min.
RUN_DATA=$FULL run cpu_b1_t4 --config configs/cpu.yaml "${b1_teacher[@]}" "${px64[@]}" \
  --set distill.temperature=4
# 0f. The loss weights re-checked with this teacher, seed 42, about 25 min each:
#    towards the teacher's logits (0.2 exits / 0.5 logit KD / 0.3 labels instead of 0.3 / 0.3 /
#    0.4) and towards the labels (0.2 / 0.2 / 0.6).
RUN_DATA=$FULL run cpu_b1_loss_kd --config configs/cpu.yaml "${b1_teacher[@]}" "${px64[@]}" \
  --set distill.alpha=0.2 --set distill.beta=0.5 --set distill.gamma=0.3
RUN_DATA=$FULL run cpu_b1_loss_ce --config configs/cpu.yaml "${b1_teacher[@]}" "${px64[@]}" \
  --set distill.alpha=0.2 --set distill.beta=0.2 --set distill.gamma=0.6
# 0g. The teacher's targets with its prior offset (distill.teacher_offset: balanced, tau fitted
#    on validation): with the shipped class-balanced resampling, seeds 42 and 43, and
#    with the training split's own class frequencies (data.balance: none), seed 42. About 25 min
#    each. `python tools/prior_offset.py RUN` prints the same fit for every model of a run.
RUN_DATA=$FULL run cpu_b1_teacher_offset --config configs/cpu.yaml "${b1_teacher[@]}" "${px64[@]}" \
  --set distill.teacher_offset=balanced
RUN_DATA=$FULL run cpu_b1_teacher_offset_seed43 --config configs/cpu.yaml "${b1_teacher[@]}" "${px64[@]}" \
  --set distill.teacher_offset=balanced --set train.seed=43
RUN_DATA=$FULL run cpu_b1_teacher_offset_natural --config configs/cpu.yaml "${b1_teacher[@]}" "${px64[@]}" \
  --set distill.teacher_offset=balanced --set data.balance=none
# 0h. Paired differences of the shipped 96 px files on the external set (kdskin evaluate
#    --against): against the references of the same seed at 96 px (EfficientNet-Lite0 alone;
#    the VGG-style CNN and the student alone of seed 42) and against the 64 px file of the same
#    seed.
px96_abl="$RUNS/cpu_b1_px96_ablation/models/reference_cnn.keras"
compare docs/results/compare/cpu_b1_px96_int8.json "$RUNS/cpu_b1_px96/tflite/model_int8.tflite" \
  "$RUNS/cpu_b1_px96_ref_effnet/models/reference_effnet.keras" "$px96_abl" \
  "$RUNS/cpu_b1_px96_student_alone/models/student_baseline.keras" \
  "$RUNS/cpu_b1/tflite/model_int8.tflite"
for seed in 43 44; do
  compare "docs/results/compare/cpu_b1_px96_seed${seed}_int8.json" \
    "$RUNS/cpu_b1_px96_seed$seed/tflite/model_int8.tflite" \
    "$RUNS/cpu_b1_px96_ref_effnet_seed$seed/models/reference_effnet.keras" "$px96_abl" \
    "$RUNS/cpu_b1_seed$seed/tflite/model_int8.tflite"
done
# The previous recipe (configs/previous/: 5,984 images, from scratch), steps 1 to 3, and the
# studies that led from it to the shipped one (step 5).
# 1. What shipped before ($PREV/cpu.yaml, within 60 minutes on 2 cores): the teacher, the final
#    distilled student, calibration and decision rules, the int8 export and its check, the
#    external evaluation, the benchmark, explanations, MODEL_CARD.md.
run cpu --config "$PREV/cpu.yaml"
# ... and again with training seed 44 (its own teacher too): a second int8 file, so the headline's
#    int8 figures are a mean over two trainings of the whole pipeline.
run cpu_seed44 --config "$PREV/cpu.yaml" --set train.seed=44
# 2. The ablation with the same budget and the cpu run's teacher: the paper's CNN, the strong
#    plain reference, the student alone, single- and multi-stage KD.
run cpu_ablation --config "$PREV/cpu_ablation.yaml" --teacher "$RUNS/cpu/models/teacher.keras"
# 3. The recipe study (docs/RESULTS.md, "Recipe study"): the previous recipe as the control
#    (it trains its own teacher), then one change at a time for the student with that teacher,
#    so only the student's settings differ. No export, benchmark, explanations or decision rules:
#    validation, test and external figures only. About 25 min each after the control.
previous_recipe=(--set "student.cnn_filters=[32,64]" --set student.l2=0.01
                 --set train.early_stopping_patience=6 --set teacher.epochs=22)
run recipe_control --config "$PREV/cpu.yaml" "${previous_recipe[@]}"
study=(--config "$PREV/cpu.yaml" "${previous_recipe[@]}"
       --teacher "$RUNS/recipe_control/models/teacher.keras"
       --set export.enabled=false --set bench.enabled=false --set explain.enabled=false
       --set trust.enabled=false)
cnn4=(--set "student.cnn_filters=[32,64,128,256]" --set student.l2=0.0005)
strong_augment=(--set augment.rotation=0.5 --set augment.zoom=0.2 --set augment.brightness=0.2
                --set augment.contrast=0.2 --set augment.hue=0.06 --set augment.saturation=0.3)
run recipe_cnn4 "${study[@]}" "${cnn4[@]}"
run recipe_cnn4_fullcos "${study[@]}" "${cnn4[@]}" --set train.early_stopping_patience=100
# Stronger augmentation (stopped after 11 of 18 epochs for time in the measured study, so not
# in the document; validation at epoch 11 level with the run above):
#   run recipe_cnn4_fullcos_aug "${study[@]}" "${cnn4[@]}" \
#     --set train.early_stopping_patience=100 "${strong_augment[@]}"
# Measured for its cost only (stopped after 4 epochs: 2.5x the student's time per epoch, so 18
# epochs alone would take the whole 60-minute budget):
#   run recipe_cnn4_stem1 "${study[@]}" "${cnn4[@]}" --set student.effnet_stem_stride=1
# 3b. The study of the shipped recipe (this session's): the cpu run's teacher reused, one change
#    at a time for the student; training seed 43 of the shipped recipe itself, and seed 43
#    of the strong plain reference alone, to see how large one seed's noise is (the seed runs
#    join the cpu group in the document: mean +- std). About 22 min each (reference: 15).
student_only=(--config "$PREV/cpu.yaml" --set export.enabled=false --set bench.enabled=false
              --set explain.enabled=false --set trust.enabled=false)
shipped=("${student_only[@]}" --teacher "$RUNS/cpu/models/teacher.keras")
run study_seed43 "${shipped[@]}" --set train.seed=43
run study_t4 "${shipped[@]}" --set distill.temperature=4
run study_logit_adjusted "${shipped[@]}" --set data.balance=logit_adjusted
reference_only=(--config "$PREV/cpu_ablation.yaml" --set teacher.enabled=false
                --set "distill.stages=[]" --set baseline.enabled=false --set export.enabled=false
                --set bench.enabled=false --set explain.enabled=false --set trust.enabled=false)
run ref_seed43 "${reference_only[@]}" --set train.seed=43
run study_strong_augment "${shipped[@]}" "${strong_augment[@]}"
# 3c. The teacher's training length and capacity: the cpu recipe's teacher alone (no student),
#    trained for 40 epochs instead of 20 (about 45 min), and twice as deep (4 transformer and 4
#    conv blocks, 20 epochs, about 45 min); chosen on validation against the cpu run's teacher.
teacher_only=(--config "$PREV/cpu.yaml" --set "distill.stages=[]" --set export.enabled=false
              --set bench.enabled=false --set explain.enabled=false --set trust.enabled=false)
run teacher_e40 "${teacher_only[@]}" --set teacher.epochs=40
run teacher_deep "${teacher_only[@]}" --set teacher.vit_depth=4 --set teacher.conv_depth=4
# The shipped student distilled from the deep teacher (best validation AUC of the three).
run study_teacher_deep "${student_only[@]}" --teacher "$RUNS/teacher_deep/models/teacher.keras"
# 3d. Class balance and loss weights on the shipped recipe (the cpu run's teacher reused):
#    class weights (sklearn "balanced") instead of resampling the training split; the loss
#    weights moved towards the labels (alpha 0.2, beta 0.2, gamma 0.6 instead of 0.3, 0.3,
#    0.4) and towards the teacher's logits (0.2, 0.5, 0.3); and training seed 44 of the strong
#    plain reference (the third seed of the shipped recipe is cpu_seed44 above). About 22 min
#    each (reference: 14).
run study_class_weight "${shipped[@]}" --set data.balance=class_weight
run study_loss_ce "${shipped[@]}" --set distill.alpha=0.2 --set distill.beta=0.2 \
  --set distill.gamma=0.6
run study_loss_kd "${shipped[@]}" --set distill.alpha=0.2 --set distill.beta=0.5 \
  --set distill.gamma=0.3
run ref_seed44 "${reference_only[@]}" --set train.seed=44
# Explanation faithfulness of the shipped student on 49 test images (deletion / insertion).
if [[ ! -f "$RUNS/explain_cpu/faithfulness.json" ]]; then
  kdskin explain --config "$PREV/cpu.yaml" --evaluate --method all \
    --model "$RUNS/cpu/models/student_multi_fusion.keras" --out "$RUNS/explain_cpu" \
    > "$RUNS/explain_cpu.log" 2>&1
fi
# 5. The stronger start: all 10,015 HAM10000 images ($FULL, not the subset in
#    $DATA), ImageNet EfficientNet-Lite0 (the pretrained extra), on the previous recipe.
# 5a. The first candidate (configs/cpu_pretrained.yaml): ImageNet EfficientNet-Lite0 in the
#    student and in the teacher's conv branch (teacher (b): a pretrained conv branch). 85 min
#    on a 2-core machine shared with other jobs (teacher 47, student 25).
RUN_DATA=$FULL run start_imagenet_full --config configs/cpu_pretrained.yaml
# 5b. The cpu recipe's hybrid teacher on the full data (teacher (a): ConvMixer branch, from
#    scratch, 6 epochs), the student's EfficientNet-Lite0 from ImageNet (8 epochs at 5e-4), and
#    both references a user would pick instead: the VGG-style CNN at its own rate (1e-3) and
#    EfficientNet-Lite0 from ImageNet alone (5e-4), 10 epochs each. About 2 h on a 2-core AMD
#    EPYC (references 30 + 15 min, teacher 29, student 27, the rest 8).
RUN_DATA=$FULL run full_imagenet --config "$PREV/cpu.yaml" --set student.weights=imagenet \
  --set student.learning_rate=0.0005 --set student.epochs=8 --set teacher.epochs=6 \
  --set reference.enabled=true --set reference.learning_rate=0.001 --set reference.epochs=10 \
  --set reference_effnet.enabled=true --set reference_effnet.epochs=10
# 5c. Other clinics: the student of 5b again, with 5b's teacher, plus Shades-of-Grey
#    colour constancy inside the model and the acquisition-shift augmentation, first without and
#    then with its over-exposure transform (augment.shift.whiten, added after the first showed
#    the suite's 'whiter' shift as the worst); 5b's own student is the "without" row. No
#    benchmark or explanations. About 45 min each on a 2-core AMD EPYC.
clinics=(--config "$PREV/cpu.yaml" --teacher "$RUNS/full_imagenet/models/teacher.keras"
         --set student.weights=imagenet --set student.learning_rate=0.0005 --set student.epochs=8
         --set data.colour_constancy=shades_of_grey --set augment.shift.enabled=true
         --set bench.enabled=false --set explain.enabled=false)
RUN_DATA=$FULL run full_cc_shift "${clinics[@]}" --set augment.shift.whiten=0
RUN_DATA=$FULL run full_cc_shift_w "${clinics[@]}"
# 5d. The same student trained alone (no teacher), with colour constancy and the augmentation,
#    without and with the border-fill layer (data.border_fill). About 16 min each.
alone=(--config "$PREV/cpu.yaml" --set teacher.enabled=false --set "distill.stages=[baseline]"
       --set student.weights=imagenet --set student.learning_rate=0.0005 --set student.epochs=8
       --set data.colour_constancy=shades_of_grey --set augment.shift.enabled=true
       --set bench.enabled=false --set explain.enabled=false)
RUN_DATA=$FULL run sa_cc_shift "${alone[@]}"
RUN_DATA=$FULL run sa_cc_shift_fill "${alone[@]}" --set data.border_fill=true
# 5e. 5b's teacher trained with colour constancy and the augmentation (no student).
RUN_DATA=$FULL run teacher_cc_shift --config "$PREV/cpu.yaml" --set teacher.epochs=6 \
  --set "distill.stages=[]" --set data.colour_constancy=shades_of_grey \
  --set augment.shift.enabled=true --set bench.enabled=false --set explain.enabled=false
# 5f. 5c's student with the teacher's targets for the unshifted image
#    (distill.teacher_view: unshifted), its own teacher trained with colour constancy but without
#    the shift augmentation, the whole pipeline: measured as `full_unshifted`, the same settings
#    as step 0's configs/cpu.yaml, into which it was adopted (its run is cpu_full).
# 6. A teacher made once with stored targets (kdskin teach): EfficientNet-Lite2 from ImageNet
#    fine-tuned alone at 160 px for 6 epochs (the reference of cpu_ablation.yaml, 57 min), adopted
#    as the one member of a teacher directory on the same split; its outputs for 4 seeded views of
#    every training image averaged with their mirror images (15 min). The students replay those
#    views with the stored targets (no teacher runs while they train); beside them, with the same
#    views: the student alone, EfficientNet-Lite0 alone at 160 px (about the student's
#    multiply-accumulates per image) and at 96 px.
RUN_DATA=$FULL run probe_lite2_160 --config configs/cpu_ablation.yaml --set teacher.enabled=false \
  --set "distill.stages=[]" --set baseline.enabled=false --set reference.enabled=false \
  --set reference_effnet.variant=B2 --set data.image_size=160 --set student.epochs=6 \
  --set teacher.image_size=null
if [[ ! -f "$RUNS/teacher_lite2_160/TEACHER_CARD.md" ]]; then
  kdskin teach --config configs/cpu.yaml --data-dir "$FULL" --split-file "$RUNS/probe_lite2_160/split.csv" \
    --out "$RUNS/teacher_lite2_160" --set augment.views=4 --set teach.tta=flip \
    --set "teach.members=[{name: lite2_160, image_size: 160}]" \
    --set teach.adopt.lite2_160="$RUNS/probe_lite2_160/models/reference_effnet.keras" \
    > "$RUNS/teacher_lite2_160.log" 2>&1
fi
views=(--set augment.views=4)
RUN_DATA=$FULL run kd_lite2_v4 --config configs/cpu.yaml --teacher "$RUNS/teacher_lite2_160" \
  "${views[@]}" --set teacher.image_size=null \
  --set "distill.exit_map={cnn_exit: logits, effnet_exit: logits}"
only=(--config configs/cpu_ablation.yaml "${views[@]}" --set teacher.enabled=false
      --set baseline.enabled=false --set reference.enabled=false)
RUN_DATA=$FULL run student_alone_v4 "${only[@]}" --set reference_effnet.enabled=false \
  --set trust.enabled=true  # its decision rules: step 6b adapts it
RUN_DATA=$FULL run student_alone_v4_seed43 "${only[@]}" --set reference_effnet.enabled=false \
  --set trust.enabled=true --set train.seed=43
RUN_DATA=$FULL run lite0_160_v4 "${only[@]}" --set "distill.stages=[]" --set data.image_size=160 \
  --set teacher.image_size=null
RUN_DATA=$FULL run lite0_96_v4 "${only[@]}" --set "distill.stages=[]"
# Paired bootstrap intervals (kdskin evaluate --against), on the external set and on the test
# split: the distilled int8 file (its decision rules folded in) and the teacher against the
# references with the same views.
alone_v4="$RUNS/student_alone_v4/models/student_baseline.keras"
lite0_v4=("$RUNS/lite0_160_v4/models/reference_effnet.keras"
          "$RUNS/lite0_96_v4/models/reference_effnet.keras")
for on in external test; do
  where=(--data "$EXTERNAL")
  [[ $on == test ]] && where=(--data "$FULL" --split test --split-file "$RUNS/kd_lite2_v4/split.csv")
  for pair in "kd_lite2_v4_int8:$RUNS/kd_lite2_v4/tflite/model_int8.tflite" \
              "teacher_lite2_160:$RUNS/teacher_lite2_160/teacher.keras"; do
    out="docs/results/compare/${pair%%:*}_$on.json"
    [[ -f "$out" ]] && continue
    kdskin evaluate --model "${pair#*:}" "${where[@]}" --json "$out" \
      --against "$alone_v4" "${lite0_v4[@]}" > "$RUNS/$(basename "${out%.json}").log" 2>&1
  done
done
# 6b. A clinic's own model (docs/FINDINGS.md, "A clinic's own model: fine-tuning"): the student
#     alone of step 6 fine-tuned on half of the external set and scored on the other half:
#     in-sample and cross-fitted operating points, 6 epochs with 1 HAM image per clinic image
#     and 4 with 3 (the defaults: cross-fitted, 4 and 3); about 6 to 9 min each.
adapt_half() {  # adapt_half NAME ARGS...: kdskin adapt --fine-tune into $RUNS/NAME
  local name=$1; shift
  if [[ -f "$RUNS/$name/adapt.json" ]]; then echo "skip $name (done)"; return; fi
  kdskin adapt --run "$RUNS/student_alone_v4" --data "$EXTERNAL" --out "$RUNS/$name" \
    --fine-tune --set adapt.holdout=0.5 "$@" > "$RUNS/$name.log" 2>&1
}
adapt_half adapt_isic_half --set adapt.folds=1 --set adapt.epochs=6 --set adapt.rehearsal=1
adapt_half adapt_isic_half_r3 --set adapt.folds=1 --set adapt.epochs=4 --set adapt.rehearsal=3
adapt_half adapt_isic_half_cf --set adapt.folds=2 --set adapt.epochs=6 --set adapt.rehearsal=1
adapt_half adapt_isic_half_cf_r3 --set adapt.folds=2 --set adapt.epochs=4 --set adapt.rehearsal=3
# 3m. Peak memory by stage (the document's last table, kdskin report --memory): the quickstart,
#     configs/cpu.yaml on all of HAM10000, and the quickstart on the streaming path with its
#     built-in data, then four times as much (how the peak grows with the images).
memrun() {  # memrun NAME ARGS...: a run on the built-in data into $RUNS/NAME
  local name=$1; shift
  if [[ -f "$RUNS/$name/report.md" ]]; then echo "skip $name (done)"; return; fi
  echo "== $name: kdskin run $*"
  kdskin run --out "$RUNS/$name" "$@" > "$RUNS/$name.log" 2>&1
}
memrun mem_quickstart --config configs/quickstart.yaml
RUN_DATA=$FULL run mem_cpu --config configs/cpu.yaml
memrun mem_stream_600 --config configs/quickstart.yaml --set data.pipeline=stream
memrun mem_stream_2400 --config configs/quickstart.yaml --set data.pipeline=stream \
  --set data.synth.n_images=2400
memory=()
for name in mem_quickstart mem_cpu mem_stream_600 mem_stream_2400; do
  if [[ -f "$RUNS/$name/report.md" ]]; then memory+=(--memory "$RUNS/$name")
  elif [[ -f "docs/results/memory/$name.json" ]]; then
    memory+=(--memory "docs/results/memory/$name.json")
  fi
done
# 4. The document, from all the runs (cpu_full and cpu_full_ablation share the config name and
#    settings, so one table and the headline; the same for cpu and cpu_ablation), followed by
#    the runs of the recipe before the previous one (sqrt class weights, every stage
#    in one run; kept as saved metrics.json files: the leaky-protocol inflation, seeds,
#    fusion-head and EfficientNet comparisons), made by an earlier version of this script.
report=()
for name in cpu_b1_px96 cpu_b1_px96_seed43 cpu_b1_px96_seed44 cpu_b1_px96_ablation \
    cpu_b1_px96_ref_effnet cpu_b1_px96_ref_effnet_seed43 cpu_b1_px96_ref_effnet_seed44 \
    cpu_b1_px96_student_alone cpu_b1_px96_student_alone_seed43 cpu_b1_teacher \
    kd_lite2_v4 student_alone_v4 student_alone_v4_seed43 lite0_160_v4 lite0_96_v4 probe_lite2_160 \
    cpu_b1 cpu_b1_ablation cpu_b1_seed43 cpu_b1_seed44 cpu_b1_ref_effnet_seed43 \
    cpu_b1_ref_effnet_seed44 cpu_b1_student_alone_seed43 cpu_b1_student_alone_seed44 \
    cpu_b1_standardise cpu_b1_auto_levels cpu_b1_whiten50 cpu_b1_t4 cpu_b1_loss_kd \
    cpu_b1_loss_ce cpu_b1_teacher_offset cpu_b1_teacher_offset_seed43 \
    cpu_b1_teacher_offset_natural \
    cpu_full cpu_full_ablation cpu_full_seed43 cpu cpu_ablation cpu_seed44 \
    study_seed43 ref_seed43 ref_seed44 study_t4 study_logit_adjusted study_strong_augment \
    study_class_weight study_loss_ce study_loss_kd \
    teacher_e40 teacher_deep study_teacher_deep recipe_control recipe_cnn4 recipe_cnn4_fullcos \
    full_imagenet full_cc_shift full_cc_shift_w sa_cc_shift sa_cc_shift_fill teacher_cc_shift \
    start_imagenet_full; do
  if [[ -f "$RUNS/$name/report.md" ]]; then report+=("$RUNS/$name")
  elif [[ -f "docs/results/$name.json" ]]; then report+=("docs/results/$name.json")
  else echo "warning: neither $RUNS/$name (finished) nor docs/results/$name.json; left out of" \
            "the document" >&2; fi
done
previous=(docs/results/prev_cpu.json docs/results/prev_cpu_seed1.json
          docs/results/prev_cpu_seed2.json docs/results/prev_cpu_concat.json
          docs/results/prev_cpu_effnet_standard.json docs/results/prev_cpu_leaky.json)
# The explanations' faithfulness: the previous recipe's student (the step after step 3d).
explain="$RUNS/explain_cpu"
[[ -f "$explain/faithfulness.json" ]] || explain=docs/results/explain/explain_cpu.json
kdskin report "${report[@]}" "${previous[@]}" --out docs/RESULTS.md --results-dir docs/results \
  --explain "$explain" --targets docs/results/targets.yaml "${memory[@]}"
