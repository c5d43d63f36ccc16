"""Would a clinic's own operating point recover melanoma recall under an acquisition shift?

The shipped files carry a melanoma log-odds offset fitted on HAM10000's validation split
(``trust.melanoma_offset``, ``trust.min_melanoma_recall``). Under some shifts of the suite
(``whiter``: over-exposure) the ranking of melanoma survives but every image's melanoma
probability falls, so the offset fitted on clean images no longer reaches the recall it did.
This tool measures the remedy a clinic could apply without retraining: refit the offset on
labelled images taken with its own acquisition. For each run's ``model_int8.tflite`` and each
shift of the suite, the top-1 balanced accuracy and melanoma recall on the run's external set
under that shift:

- ``file``: as the file decides (its offset, fitted on clean validation images);
- ``refit on shifted validation``: the operating point refitted as ``kdskin adapt`` does
  (temperature, then the melanoma offset: balanced, with the run's floor or ``--min-recall``) on
  the run's validation split under the same shift: the clinic labels images of the same
  population with its device;
- ``refit on own images``: the external set itself under the shift, two stratified halves
  (seeded), each scored with the offset refitted on the other half: the clinic labels part of
  its own patients' images (half the external set, 17 melanomas per half on isic2018_dev).

Nothing is written. On the 2-core Xeon about 1 min per run (the int8 file on the validation
split and the external set under the 10 shifts).

    python experiments/2026-12/clinic_operating_point.py runs/cpu_b1_px96 runs/cpu_b1_px96_seed43
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _halves(labels, seed: int):
    """Two stratified halves of ``range(len(labels))`` as index arrays."""
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed)
    return [test for _, test in folds.split(labels, labels)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished run directories with an int8 file")
    parser.add_argument("--min-recall", type=float, default=None, metavar="R",
                        help="melanoma recall the refitted offset must reach (default: the "
                             "run's trust.min_melanoma_recall)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the two halves")
    args = parser.parse_args(argv)
    if args.min_recall is not None and not 0.0 < args.min_recall <= 1.0:
        parser.error(f"--min-recall must be in (0, 1], got {args.min_recall}")

    import numpy as np

    from kdskin.config import load_config
    from kdskin.data.shifts import SHIFTS, apply_shift
    from kdskin.decision import DecisionRules
    from kdskin.evaluate import load_classifier
    from kdskin.pipeline.data import data_of_run
    from kdskin.pipeline.external import load_external
    from kdskin.pipeline.trust import adapt_rules
    from kdskin.rundir import RunDir
    from kdskin.trust.operating_point import offsets_vector, top1_effect

    def refitted(cfg, labels, probs, apply_to):
        """``apply_to`` (M, 7) decided with the operating point refitted on ``probs`` (N, 7)."""
        return adapt_rules(cfg, DecisionRules(), labels, probs, "").calibrate(apply_to)

    none = offsets_vector(0.0)  # top1_effect's "before" columns: the probabilities as given
    print("| run | shift | file: bal. acc. / mel. | refit on shifted validation | "
          "refit on own images (2 halves) |")
    print("|---|---|---|---|---|")
    for root in args.runs:
        run = RunDir(Path(root)).require_finished()
        int8 = run.tflite / "model_int8.tflite"
        if not int8.is_file():
            raise SystemExit(f"{root}: no tflite/model_int8.tflite; export the run first")
        cfg = load_config(run.config)
        if not cfg.data.external:
            raise SystemExit(f"{root}: the run has no external set (data.external)")
        data = data_of_run(run, cfg)
        refit = load_config(run.config, [  # the run's rule, at least the balanced offset
            "trust.melanoma_offset=balanced", *([] if args.min_recall is None else [
                f"trust.min_melanoma_recall={args.min_recall}"])])
        external = load_external(cfg, run)[0]
        clf = load_classifier(int8)
        halves = _halves(external.labels, args.seed)
        for shift in SHIFTS:
            val = clf.predict(apply_shift(shift, data.val.images))
            ext = clf.predict(apply_shift(shift, external.images))
            file = top1_effect(external.labels, ext, none)
            on_val = top1_effect(external.labels,
                                 refitted(refit, data.val.labels, val, ext), none)
            own = np.zeros_like(ext)
            for fit_idx, score_idx in (halves, halves[::-1]):
                own[score_idx] = refitted(refit, external.labels[fit_idx], ext[fit_idx],
                                          ext[score_idx])
            on_own = top1_effect(external.labels, own, none)
            cells = [f"{e['balanced_accuracy_before']:.3f} / {e['melanoma_recall_before']:.2f}"
                     for e in (file, on_val, on_own)]
            print(f"| {run.root.name} | {shift} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
