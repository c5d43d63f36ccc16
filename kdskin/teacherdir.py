"""The teacher directory: a teacher made once (``kdskin teach``) and reused by runs.

Layout (a :class:`~kdskin.rundir.RunDir` with more in it)::

    DIR/teacher.json        :class:`TeacherInfo`: what it is, its figures, its store
    DIR/TEACHER_CARD.md     the same for people
    DIR/config.yaml         the config it was made with      DIR/split.csv   its split
    DIR/teacher.keras       the ensemble as one model (what a run copies as its teacher)
    DIR/models/M[_foldF].keras  every member (each fold's model with teach.folds > 1)
    DIR/targets/views.npz   the views of every training image (ids, views, folds)
    DIR/targets/M.npz       member M's stored logits: one (N, K, C) array per teacher output
    DIR/logs/ plots/ cache/ backup/   as in a run

A run reuses it when its split, class list, views and teacher size are the directory's
(:func:`check_compatible`); anything else is refused with one line saying what differs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.constants import CLASSES
from kdskin.errors import KdskinError
from kdskin.io import atomic_write, read_json, write_json
from kdskin.rundir import RunDir

#: Version of the teacher.json layout written by this code.
TEACHER_SCHEMA = 1


@dataclass
class TeacherInfo:
    """``teacher.json``. ``members``: ``{name: {"config": teacher section, "image_size",
    "models": {model name: {"fold", "train_seconds", "val", "test", "train"}}}}``;
    ``ensemble``: the ensemble's ``val``/``test`` metrics and ``train_oof`` (each training
    image scored by the models that did not train on it, when there are folds; else by the
    model that trained on it: ``train_seen``); ``store``: the stored targets (views K, TTA,
    outputs, bytes, seconds)."""

    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    split_digest: str = ""
    data: str = ""
    image_size: int = 0  # the ensemble's input (teacher.keras)
    folds: int = 1
    tta: str = "none"
    views: dict[str, Any] = field(default_factory=dict)  # {"k", "seed", "settings"}
    exit_map: dict[str, str] = field(default_factory=dict)
    members: dict[str, Any] = field(default_factory=dict)
    ensemble: dict[str, Any] = field(default_factory=dict)
    store: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    complete: bool = False
    schema: int = TEACHER_SCHEMA

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TeacherInfo:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def outputs(self) -> list[str]:
        """The teacher outputs the store holds."""
        return list(self.store.get("outputs", []))


@dataclass(frozen=True)
class TeacherDir(RunDir):
    """Paths of a teacher directory (nothing is created until asked)."""

    @property
    def info_file(self) -> Path:
        return self.root / "teacher.json"

    @property
    def card(self) -> Path:
        return self.root / "TEACHER_CARD.md"

    @property
    def ensemble(self) -> Path:
        return self.root / "teacher.keras"

    @property
    def targets(self) -> Path:
        return self.root / "targets"

    @property
    def views_file(self) -> Path:
        return self.targets / "views.npz"

    def member_targets(self, member: str) -> Path:
        return self.targets / f"{member}.npz"

    def is_teacher_dir(self) -> bool:
        return self.info_file.is_file()

    def load_info(self) -> TeacherInfo:
        try:
            return TeacherInfo.from_dict(read_json(self.info_file))
        except (OSError, ValueError):
            raise KdskinError(f"{self.info_file}: missing or not valid JSON; pass a directory "
                              f"written by kdskin teach") from None

    def save_info(self, info: TeacherInfo) -> Path:
        return write_json(self.info_file, info.to_dict())

    def require_complete(self) -> TeacherInfo:
        """The info of a finished directory; one-line error otherwise."""
        if not self.is_teacher_dir():
            raise KdskinError(f"{self.root}: not a teacher directory (no teacher.json); make one "
                              f"with kdskin teach --config CONFIG --out {self.root}")
        info = self.load_info()
        if not info.complete or not self.ensemble.is_file():
            raise KdskinError(f"{self.root}: the teacher directory is unfinished; run kdskin "
                              f"teach again with the same --out to finish it")
        return info


def save_arrays(path: Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` written atomically (no half-written store)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: np.savez(str(tmp), **arrays))
    return path


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` written by :func:`save_arrays` (no pickles)."""
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def check_compatible(tdir: TeacherDir, info: TeacherInfo, split_digest: str, views: int,
                     view_seed: int, view_settings: Mapping[str, Any],
                     teacher_size: int | None, exit_names: Sequence[str]) -> None:
    """Refuse (one-line :class:`KdskinError`) a teacher directory made for another class list,
    split, set of views, teacher size or exit map than the run's."""
    where = f"{tdir.root}: the teacher directory"
    if list(info.classes) != list(CLASSES):
        raise KdskinError(f"{where} has classes {info.classes}, this kdskin {list(CLASSES)}; "
                          f"make a new one with kdskin teach")
    if info.split_digest != split_digest:
        raise KdskinError(f"{where} was made for another split (digest {info.split_digest}, "
                          f"this run's {split_digest}); use the same data folder and data.split/"
                          f"seed/protocol, or make a teacher for this split with kdskin teach")
    stored = info.views
    if (stored.get("k") != views or stored.get("seed") != view_seed
            or stored.get("settings") != dict(view_settings)):
        raise KdskinError(f"{where} stores {stored.get('k')} views (seed {stored.get('seed')}, "
                          f"{stored.get('settings')}); this run's augment asks for {views} "
                          f"(seed {view_seed}, {dict(view_settings)}): set augment.views/"
                          f"view_seed and the augment ranges to the directory's")
    if teacher_size is not None and teacher_size != info.image_size:
        raise KdskinError(f"{where} takes {info.image_size}px images but this config's "
                          f"teacher.image_size is {teacher_size}; set teacher.image_size="
                          f"{info.image_size} (or null) or make a teacher at that size")
    missing = [n for n in exit_names if n not in info.outputs()]
    if missing:
        raise KdskinError(f"{where} stores targets for {', '.join(info.outputs())}; "
                          f"distill.exit_map asks for {', '.join(missing)}: set the exit map "
                          f"to the stored outputs or make a teacher with this exit map")


def load_store(tdir: TeacherDir, info: TeacherInfo, image_ids: Sequence[str],
               outputs: Sequence[str], temperature: float
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(views (N, K, P), {output: (N, K, C) ensemble logits at temperature})`` of the
    training images ``image_ids`` (in that order)."""
    from kdskin.distill.targets import ensemble_logits

    views = load_arrays(tdir.views_file)
    ids = [str(i) for i in views["image_ids"]]
    row = {image_id: i for i, image_id in enumerate(ids)}
    missing = [i for i in image_ids if i not in row]
    if missing:
        raise KdskinError(f"{tdir.root}: the store has no views for {len(missing)} training "
                          f"image(s) (first: {missing[0]}); make the teacher for this split")
    idx = np.array([row[i] for i in image_ids], np.int64)
    members = [load_arrays(tdir.member_targets(m)) for m in info.members]
    targets = {out: ensemble_logits([m[out][idx] for m in members], temperature)
               for out in outputs}
    return views["views"][idx], targets


__all__ = ["TEACHER_SCHEMA", "TeacherDir", "TeacherInfo", "check_compatible", "load_arrays",
           "load_store", "save_arrays"]
