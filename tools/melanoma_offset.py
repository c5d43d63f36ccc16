"""What the melanoma operating point (``trust.melanoma_offset: balanced``) does for every model
of finished runs, references included, so the comparison with the distilled student is fair.

For each Keras model of each run at the run's input (the teacher, at its own size, is skipped)
and the run's ``model_int8.tflite``: fit the melanoma log-odds offset on the run's validation
split (as ``kdskin run`` does for its final student, after the model's own temperature), then print
balanced accuracy and melanoma recall of the top-1 class without and with it on validation,
test and the run's external set. Nothing is written. (The int8 file of a run re-exported with
the offset already carries it: its row is then fitted on top of it.)

    python tools/melanoma_offset.py runs/cpu_b1 runs/cpu_b1_ablation
    python tools/melanoma_offset.py --min-recall 0.7 runs/cpu_b1_px96

``--min-recall R``: the offset then also reaches melanoma recall R on validation, as
``trust.min_melanoma_recall: R`` does in a run (the smallest offset of the grid, at or above the
balanced one, that does).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished run directories")
    parser.add_argument("--min-recall", type=float, default=None, metavar="R",
                        help="melanoma recall the offset must reach on validation, in (0, 1]")
    args = parser.parse_args(argv)
    if args.min_recall is not None and not 0.0 < args.min_recall <= 1.0:
        parser.error(f"--min-recall must be in (0, 1], got {args.min_recall}")

    from kdskin.config import load_config
    from kdskin.evaluate import KerasClassifier, load_classifier
    from kdskin.models.contract import input_size, load_keras
    from kdskin.pipeline.data import data_of_run
    from kdskin.pipeline.external import load_external
    from kdskin.rundir import TEACHER, RunDir
    from kdskin.trust.calibration import apply_temperature_to_probs, fit_temperature_from_probs
    from kdskin.trust.operating_point import fit_melanoma_offset, offsets_vector, top1_effect

    print("| run | model | offset | val bal. acc. / mel. | test bal. acc. / mel. | "
          "external bal. acc. / mel. |")
    print("|---|---|---|---|---|---|")
    for root in args.runs:
        run = RunDir(Path(root)).require_finished()
        cfg = load_config(run.config)
        data = data_of_run(run, cfg)
        external = load_external(cfg, run)[0] if cfg.data.external else None
        state = run.load_metrics()
        models = [(name, KerasClassifier(load_keras(run.model(name))))
                  for name in state.models if name != TEACHER]
        int8 = run.tflite / "model_int8.tflite"
        if int8.is_file():
            models.append((int8.name, load_classifier(int8)))
        for name, clf in models:
            if isinstance(clf, KerasClassifier) and input_size(clf.model) != cfg.data.image_size:
                continue
            val = clf.predict(data.val.images)
            t = fit_temperature_from_probs(val, data.val.labels)
            offset = offsets_vector(fit_melanoma_offset(
                data.val.labels, apply_temperature_to_probs(val, t), min_recall=args.min_recall))
            cells = []
            for part, probs in ((data.val, val), (data.test, None), (external, None)):
                if part is None:
                    cells.append("n/a")
                    continue
                p = apply_temperature_to_probs(clf.predict(part.images) if probs is None
                                               else probs, t)
                e = top1_effect(part.labels, p, offset)
                cells.append(f"{e['balanced_accuracy_before']:.3f} / "
                             f"{e['melanoma_recall_before']:.2f} -> "
                             f"{e['balanced_accuracy_after']:.3f} / "
                             f"{e['melanoma_recall_after']:.2f}")
            print(f"| {run.root.name} | {name} | {max(offset, key=abs):+.2f} | "
                  + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
