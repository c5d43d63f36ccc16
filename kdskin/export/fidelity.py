"""The int8 file's verdict against its Keras model, as one line for people (no TensorFlow).

:func:`kdskin.export.check.export_and_check` measures it (``int8_within_tolerance``: int8 loses
at most ``export.max_int8_drop`` of accuracy and of macro F1 on the test split); the run's
last log line, ``report.md``, the model card and ``kdskin export`` all say it with
:func:`int8_check_line`, and ``export.require_int8_within_tolerance`` makes a failure an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def int8_check_line(result: Mapping[str, Any]) -> str | None:
    """One line on an export's int8 file against its Keras model on the test split and its
    verdict (``int8_within_tolerance`` of :func:`export_and_check`'s result), e.g.
    ``int8 vs Keras on 1502 test images: accuracy 0.80 vs 0.81, ..., within 1 point(s): NO``;
    None when no int8 file was checked."""
    ev = result.get("evaluation") or {}
    int8, keras_m = (ev.get("tflite") or {}).get("int8"), ev.get("keras")
    if not int8 or not keras_m or "int8_within_tolerance" not in result:
        return None
    return (f"int8 vs Keras on {ev.get('n_images', '?')} test images: accuracy "
            f"{int8['accuracy']:.4f} vs {keras_m['accuracy']:.4f}, macro F1 "
            f"{int8['macro_f1']:.4f} vs {keras_m['macro_f1']:.4f}, top-1 agreement "
            f"{int8['agreement']:.4f}, within {result['max_int8_drop'] * 100:g} point(s): "
            f"{'yes' if result['int8_within_tolerance'] else 'NO'}")


def int8_check_failed(result: Mapping[str, Any] | None) -> bool:
    """True when an export checked its int8 file and it lost more than allowed."""
    return bool(result) and int8_check_line(result) is not None and \
        not result["int8_within_tolerance"]
