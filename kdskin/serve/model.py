"""The model behind ``kdskin serve``: predictions from the deployed file, explanations beside it.

:class:`ServedModel` answers

* :meth:`~ServedModel.predict`: what ``kdskin predict --json`` gives for one image (calibrated
  probabilities, top classes, referral decision, out-of-scope warning) from the int8 ``.tflite``
  of a run (or any ``--model`` file) and its ``decision.json``;
* :meth:`~ServedModel.explain`: a Grad-CAM or Score-CAM map from the run's Keras final student,
  or a LIME map from the deployed file itself (seeded; the file's preprocessing is inside its
  ``predict``), as PNG overlays.

A LiteRT interpreter and the CAM objects are not thread-safe: each is used under its own lock,
so concurrent requests are served one model call at a time and never see each other's tensors.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.constants import CLASSES, NUM_CLASSES
from kdskin.decision import NOT_A_DEVICE, DecisionRules, describe_prediction, rules_for_model
from kdskin.errors import KdskinError, ModelError
from kdskin.explain.methods import CAM_METHODS, METHODS, TITLES
from kdskin.export.specs import FILE_NAMES
from kdskin.rundir import RunDir, final_student_name

#: The file a run serves by default (``RUN/tflite/model_int8.tflite``).
DEPLOYED_FILE = FILE_NAMES["int8"]
#: The model card beside the exported files (and in the run directory).
MODEL_CARD = "MODEL_CARD.md"


@dataclass(frozen=True)
class ExplainSettings:
    """LIME and CAM settings (from the run's ``explain`` config when there is one)."""

    lime_samples: int = 300
    lime_segments: int = 50
    scorecam_max_n: int = 16
    seed: int = 0
    cam_layers: tuple[str, ...] = ()
    overlay_alpha: float = 0.4
    colormap: str = "jet"


def png_base64(pixels: np.ndarray) -> str:
    """An RGB uint8 array ``(H, W, 3)`` as a base64 PNG string."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def intended_use_line(*folders: Path) -> str:
    """The model card's short intended-use line (its first ``> `` quote) from the first
    ``MODEL_CARD.md`` in ``folders``; kdskin's own notice when there is none."""
    for folder in folders:
        card = Path(folder) / MODEL_CARD
        if card.is_file():
            for line in card.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith(">") and line.strip("> ").strip():
                    return line.strip("> ").strip()
    return NOT_A_DEVICE


@dataclass
class ServedModel:
    """A classifier (``.predict(uint8 (N,S,S,3)) -> (N,7)``, ``.input_size``) with its rules.

    ``keras_path``: the Keras model the CAMs explain (None: LIME only, with ``cam_reason``
    saying why). The Keras model is loaded on first use or by :meth:`warm_up`.
    """

    classifier: Any
    model_path: Path
    rules: DecisionRules | None = None
    keras_path: Path | None = None
    cam_reason: str = ""
    notice: str = NOT_A_DEVICE
    settings: ExplainSettings = field(default_factory=ExplainSettings)

    def __post_init__(self) -> None:
        self.input_size = int(self.classifier.input_size)
        self._predict_lock = threading.Lock()
        self._keras_lock = threading.Lock()
        self._cams: dict[str, Any] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_run(cls, run_dir: str | Path, model: str | Path | None = None) -> ServedModel:
        """A finished run: its ``tflite/model_int8.tflite`` (or ``model``), the decision rules
        beside it, its final Keras student for the CAMs and its ``explain`` settings."""
        from kdskin.config import load_config

        run = RunDir(Path(run_dir)).require_finished()
        path = Path(model) if model is not None else run.tflite / DEPLOYED_FILE
        if not path.is_file():
            raise ModelError(f"{path}: no deployed model in this run; export it with "
                             f"kdskin export --run {run.root}")
        cfg = load_config(run.config)
        final = final_student_name(cfg.distill.stages)
        keras_path = run.model(final) if final else None
        e = cfg.explain
        settings = ExplainSettings(lime_samples=e.lime_samples, lime_segments=e.lime_segments,
                                   scorecam_max_n=e.scorecam_max_n, seed=e.seed,
                                   cam_layers=tuple(e.cam_layers),
                                   overlay_alpha=e.overlay_alpha, colormap=e.colormap)
        return cls._build(path, keras_path, settings, (path.parent, run.root))

    @classmethod
    def from_model(cls, model: str | Path) -> ServedModel:
        """One ``.tflite`` or ``.keras`` file; inside a run, that run's settings and (for a
        ``.tflite``) its final Keras student for the CAMs."""
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"{path}: model file not found; pass a .tflite or .keras file")
        run = RunDir.of_model(path)
        if run is not None and run.is_finished():
            return cls.from_run(run.root, path)
        keras_path = path if path.suffix == ".keras" else None
        return cls._build(path, keras_path, ExplainSettings(), (path.parent,))

    @classmethod
    def _build(cls, path: Path, keras_path: Path | None, settings: ExplainSettings,
               card_folders: tuple[Path, ...]) -> ServedModel:
        from kdskin.evaluate import load_classifier

        reason = ""
        if path.suffix == ".keras":
            keras_path = path
        elif keras_path is None:
            reason = (f"{path.name} is a .tflite file outside a run: Grad-CAM and Score-CAM "
                      f"need the Keras model; serve the run (--run) for them")
        elif not keras_path.is_file():
            reason = f"{keras_path}: the run's Keras student is missing"
            keras_path = None
        return cls(classifier=load_classifier(path), model_path=path,
                   rules=rules_for_model(path), keras_path=keras_path, cam_reason=reason,
                   notice=intended_use_line(*card_folders), settings=settings)

    # ------------------------------------------------------------------ description
    @property
    def methods(self) -> list[str]:
        """The explanation methods this model offers (CAMs only with a Keras model)."""
        return [m for m in METHODS if m not in CAM_METHODS or self.keras_path is not None]

    def info(self) -> dict[str, Any]:
        """What the page shows about the model (``GET /info``)."""
        return {"model": str(self.model_path), "input_size": self.input_size,
                "classes": list(CLASSES), "methods": self.methods,
                "method_titles": {m: TITLES[m] for m in self.methods},
                "cam_model": None if self.keras_path is None else str(self.keras_path),
                "cam_unavailable": self.cam_reason or None,
                "lime_samples": self.settings.lime_samples,
                "decision_rules": None if self.rules is None else self.rules.to_dict(),
                "notice": self.notice}

    # ------------------------------------------------------------------ inference
    def probs(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, 7)`` of uint8 images ``(N, S, S, 3)`` (one call at a time)."""
        with self._predict_lock:
            out = np.asarray(self.classifier.predict(images), dtype=np.float64)
        if out.shape != (len(images), NUM_CLASSES):
            raise ModelError(f"{self.model_path}: returned shape {out.shape}; expected "
                             f"({len(images)}, {NUM_CLASSES})")
        return out

    def predict(self, image: np.ndarray, name: str, top: int = 3) -> dict[str, Any]:
        """``kdskin predict --json``'s entry for one image ``(S, S, 3)`` uint8."""
        if not 1 <= top <= NUM_CLASSES:
            raise KdskinError(f"top {top}: must be between 1 and {NUM_CLASSES}")
        return {"image": name, **describe_prediction(self.probs(image[None])[0], self.rules, top,
                                                     image=image)}

    def warm_up(self) -> None:
        """Load the Keras model and trace the CAMs once, so the first request is not slow."""
        blank = np.zeros((self.input_size, self.input_size, 3), np.uint8)
        self.predict(blank, "warm-up")
        for method in self.methods:
            if method in CAM_METHODS:
                self._cam_map(method, blank, 0)

    # ------------------------------------------------------------------ explanations
    def _cam(self, method: str) -> Any:
        if method not in self._cams:
            from kdskin.explain.cams import GradCAM, ScoreCAM
            from kdskin.models.contract import load_keras

            assert self.keras_path is not None
            model = self._cams["_model"] if "_model" in self._cams else load_keras(
                self.keras_path)
            self._cams["_model"] = model
            layers = list(self.settings.cam_layers) or None
            self._cams[method] = (GradCAM(model, layers) if method == "gradcam" else
                                  ScoreCAM(model, layers, max_n=self.settings.scorecam_max_n))
            if self._cams[method].size != self.input_size:
                raise ModelError(f"{self.keras_path}: input size {self._cams[method].size} "
                                 f"differs from {self.model_path.name}'s {self.input_size}")
        return self._cams[method]

    def _cam_map(self, method: str, image: np.ndarray, class_index: int) -> np.ndarray:
        with self._keras_lock:
            return np.asarray(self._cam(method)(image[None].astype(np.float32),
                                                class_index=[class_index])[0])

    def _lime_map(self, image: np.ndarray, class_index: int) -> np.ndarray:
        from kdskin.explain.lime_explainer import LimeExplainer

        s = self.settings
        lime = LimeExplainer(self.probs, num_samples=s.lime_samples,
                             num_segments=s.lime_segments, seed=s.seed, batch_size=100)
        return np.asarray(lime(image[None], class_index=[class_index])[0])

    def explain(self, image: np.ndarray, name: str, method: str,
                class_name: str | None = None) -> dict[str, Any]:
        """One explanation of ``image`` (S, S, 3) uint8 for ``class_name`` (default: the
        deployed file's top class): base64 PNGs of the input and the overlay, at the model's
        input size."""
        if method not in METHODS:
            raise KdskinError(f"method {method!r}: choose one of {', '.join(METHODS)}")
        if method not in self.methods:
            raise ModelError(f"{TITLES[method]} is not available: {self.cam_reason}")
        from kdskin.explain.render import overlay

        start = time.perf_counter()
        probs = self.predict(image, name, NUM_CLASSES)["probabilities"]
        if class_name is None:
            class_name = max(probs, key=probs.get)
        if class_name not in CLASSES:
            raise KdskinError(f"class {class_name!r}: choose one of {', '.join(CLASSES)}")
        index = CLASSES.index(class_name)
        heat = (self._cam_map(method, image, index) if method in CAM_METHODS
                else self._lime_map(image, index))
        pixels = overlay(image, heat, self.settings.overlay_alpha, self.settings.colormap)
        return {"image": name, "method": method, "title": TITLES[method],
                "class": class_name, "probability": probs[class_name],
                "explained_model": str(self.keras_path if method in CAM_METHODS
                                       else self.model_path),
                "size": self.input_size, "input_png": png_base64(image),
                "overlay_png": png_base64(pixels),
                "seconds": round(time.perf_counter() - start, 3)}
