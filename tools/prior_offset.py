"""What the teacher's prior offset (``distill.teacher_offset: balanced``) does for every model of
finished runs, the teacher and the references included, so the comparison is fair.

For each Keras model of each run (the teacher at its own input size) and the run's
``model_int8.tflite``: fit ``tau`` of the prior offset ``-tau * log(training prior)`` on the
run's validation split for balanced accuracy, as ``kdskin run`` does for its teacher
(:func:`kdskin.trust.operating_point.fit_prior_offset`), then print balanced accuracy and
melanoma recall of the top-1 class without and with it on validation, test and the run's
external set. Nothing is written.

    python tools/prior_offset.py runs/cpu_b1 runs/cpu_b1_ablation
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
    args = parser.parse_args(argv)

    from kdskin.config import load_config
    from kdskin.constants import CLASS_INDEX, MELANOMA
    from kdskin.data.pipeline import logit_adjustment
    from kdskin.evaluate import KerasClassifier, load_classifier
    from kdskin.metrics import balanced_accuracy
    from kdskin.models.contract import input_size, load_keras
    from kdskin.pipeline.data import data_of_run, teacher_data
    from kdskin.pipeline.external import load_external
    from kdskin.rundir import TEACHER, RunDir
    from kdskin.trust.calibration import probs_to_logits
    from kdskin.trust.operating_point import fit_prior_offset

    mel = CLASS_INDEX[MELANOMA]

    def scores(labels, logits) -> str:
        top = logits.argmax(axis=1)
        recall = (top[labels == mel] == mel).mean()
        return f"{balanced_accuracy(labels, logits):.3f} / {recall:.2f}"

    print("| run | model | tau | val bal. acc. / mel. | test bal. acc. / mel. | "
          "external bal. acc. / mel. |")
    print("|---|---|---|---|---|---|")
    for root in args.runs:
        run = RunDir(Path(root)).require_finished()
        cfg = load_config(run.config)
        data = data_of_run(run, cfg)
        log_prior = logit_adjustment(data.train_labels, 1.0)
        state = run.load_metrics()
        models = [(name, KerasClassifier(load_keras(run.model(name)))) for name in state.models]
        int8 = run.tflite / "model_int8.tflite"
        if int8.is_file():
            models.append((int8.name, load_classifier(int8)))
        for name, clf in models:
            size = input_size(clf.model) if isinstance(clf, KerasClassifier) \
                else cfg.data.image_size
            on = teacher_data(cfg, run, data) if name == TEACHER else data
            if size != on.val.images.shape[1]:
                continue
            external = load_external(cfg, run, size)[0] if cfg.data.external else None
            val = probs_to_logits(clf.predict(on.val.images))
            fit = fit_prior_offset(on.val.labels, val, log_prior)
            cells = []
            for part in (on.val, on.test, external):
                if part is None:
                    cells.append("n/a")
                    continue
                z = val if part is on.val else probs_to_logits(clf.predict(part.images))
                cells.append(f"{scores(part.labels, z)} -> "
                             f"{scores(part.labels, z + fit['offsets'])}")
            print(f"| {run.root.name} | {name} | {fit['tau']:.2f} | " + " | ".join(cells) + " |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
