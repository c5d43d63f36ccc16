"""``kdskin explain``: explanation maps for image files, or for test images of a run."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdskin.config import Config, ExplainConfig
from kdskin.constants import CLASSES
from kdskin.errors import DataError


def _test_split(cfg: Config, model: str, data: str | None, split_file: str | None) -> Any:
    """The test split (``SplitArrays``) of ``data`` (with ``split_file``) or of the model's run."""
    from kdskin.pipeline.data import data_of_model

    return data_of_model(cfg, model, data, split_file)[0].test


def explain_command(cfg: Config, model: str, inputs: Sequence[str], methods: str, out: str,
                    class_name: str | None = None, evaluate: bool = False,
                    data: str | None = None, split_file: str | None = None,
                    test_data: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Explain image files/folders ``inputs``, or (``evaluate`` without inputs) a class-stratified
    set of ``cfg.explain.evaluate_images`` test images, and print what was written.

    ``methods``: ``gradcam``, ``scorecam``, ``lime`` or ``all`` (every method the model format
    supports: LIME only for a ``.tflite``). ``evaluate`` adds the deletion/insertion
    faithfulness table (printed and written). The test images come from ``test_data()``
    (a ``SplitArrays``) when given, else from ``data`` (with ``split_file``) or the model's run.
    Returns the ``explanations.json`` content.
    """
    from kdskin.data.images import collect_images, load_images
    from kdskin.data.select import pick_stratified
    from kdskin.explain.methods import check_methods_for, methods_for_format
    from kdskin.explain.render import explain_images, model_input_size, model_kind

    ecfg: ExplainConfig = dataclasses.replace(cfg.explain, faithfulness=bool(evaluate))
    kind, label = model_kind(model)
    if methods == "all":
        chosen = methods_for_format(kind)
        if kind == "tflite":
            print(f"{label}: a .tflite exposes no layers or gradients; explaining with LIME only "
                  f"(Grad-CAM and Score-CAM need the .keras model)")
    else:
        chosen = [methods]
    check_methods_for(chosen, kind, label, key="--method")
    class_index = None
    if class_name is not None:
        if class_name not in CLASSES:
            raise DataError(f"--class {class_name!r}: unknown class; classes are "
                            f"{', '.join(CLASSES)}")
        class_index = CLASSES.index(class_name)
    labels = None
    if inputs:
        files = collect_images(inputs)
        images, kept, errors = load_images(files, model_input_size(model))
        for err in errors:
            print(f"skipped unreadable image: {err}")
        if not len(images):
            raise DataError("explain: none of the given images could be read")
        names = [files[i].stem for i in kept]
    elif evaluate:
        test = test_data() if test_data is not None else _test_split(cfg, model, data,
                                                                     split_file)
        idx = pick_stratified(test.labels, ecfg.evaluate_images, len(CLASSES), seed=ecfg.seed)
        images, labels = test.images[idx], test.labels[idx]
        names = [test.image_ids[i] for i in idx]
        per_class = max(1, -(-ecfg.evaluate_images // len(CLASSES)))
        print(f"explaining {len(idx)} test images ({per_class} per class where possible)")
    else:
        raise DataError("explain: give IMAGE_OR_DIR arguments, or --evaluate (with --data, or "
                        "a model inside a run directory) to use the test split")
    result = explain_images(model, images, names, chosen, out, ecfg, class_index=class_index,
                            labels=labels)
    print(f"wrote {len(names)} image(s) x {len(chosen)} method(s) to {out}: "
          + ", ".join(result["grids"].values()) + ", comparison.png, explanations.json")
    if evaluate:
        print((Path(out) / "faithfulness.md").read_text())
    return result
