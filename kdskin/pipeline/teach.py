"""``kdskin teach``: make a teacher directory once (members, folds, stored targets).

Order: split (the directory's own, or the one passed) -> views of every training image
(``augment.views`` K, seeded by ``augment.view_seed``) -> for each member of ``teach.members``
(or the ``teacher`` section alone) and each fold: train (or adopt, ``teach.adopt``), evaluate on
validation and test, record -> the ensemble (mean of every model's probabilities) as
``teacher.keras``, checked better than one class on validation -> each member's stored targets:
its outputs for the K views of every training image (out of fold with ``teach.folds`` > 1;
with their mirror images averaged in, ``teach.tta: flip``) -> the figures of the targets on the
training split -> ``TEACHER_CARD.md``.

Every finished model and store is recorded in ``teacher.json`` at once, so running the same
command again resumes where it stopped (member by member, and inside a model's fit from its
``BackupAndRestore`` state). See :mod:`kdskin.teacherdir` for the layout.
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.config import Config, TeacherConfig
from kdskin.console import log
from kdskin.errors import KdskinError
from kdskin.pipeline.data import RunData, prepare_data
from kdskin.pipeline.stages import evaluate_model, train_classifier
from kdskin.rundir import RunDir, split_digest
from kdskin.teacherdir import TeacherDir, TeacherInfo, load_arrays, save_arrays

#: Images per forward pass when the targets are stored.
STORE_BATCH = 64


def model_names(member: str, folds: int) -> list[str]:
    """The model files of one member: ``member`` alone, or ``member_fold0 ..``."""
    return [member] if folds == 1 else [f"{member}_fold{f}" for f in range(folds)]


def _member_cfg(cfg: Config, member: TeacherConfig) -> Config:
    """``cfg`` with the member as its teacher, at the member's input size, without
    TensorBoard maps (they are for the students of runs)."""
    out = copy.deepcopy(cfg)
    out.teacher = copy.deepcopy(member)
    out.data.image_size = cfg.member_image_size(member)
    out.teacher.image_size = None
    out.explain.tensorboard = False
    return out


def _probs(model: Any, images: np.ndarray) -> np.ndarray:
    from kdskin.evaluate import KerasClassifier

    return KerasClassifier(model).predict(images)


def _summary(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Balanced accuracy, macro AUC and mean top-1 probability of ``probs`` ``(N, C)``."""
    from kdskin.metrics import classification_metrics

    m = classification_metrics(labels, probs)
    return {"balanced_accuracy": m["balanced_accuracy"], "macro_auc": m["macro_auc"],
            "accuracy": m["accuracy"], "mean_top1": float(probs.max(axis=1).mean())}


def stored_outputs(model: Any, images: np.ndarray, views: np.ndarray, tta: str,
                   batch: int = STORE_BATCH) -> dict[str, np.ndarray]:
    """``{output: (N, K, C) float32 logits}`` of ``model`` on ``images`` ``(N, S, S, 3)`` seen
    through ``views`` ``(N, K, P)``. ``tta`` ``flip``: each view's probabilities averaged with
    those of its mirror image (returned as the log of the mean)."""
    import tensorflow as tf

    from kdskin.data.views import apply_views, flip_views
    from kdskin.distill.targets import mean_probability_logits
    from kdskin.models.contract import output_names

    names = output_names(model)

    @tf.function(reduce_retracing=True)
    def forward(x: Any, p: Any) -> Any:
        out = model(apply_views(x, p), training=False)
        return {n: out[n] for n in names} if isinstance(out, dict) else {names[0]: out}

    n, k = views.shape[:2]
    passes = [views] + ([flip_views(views)] if tta == "flip" else [])
    results = []
    for pv in passes:
        out = {name: np.zeros((n, k, 7), np.float32) for name in names}
        for v in range(k):
            for start in range(0, n, batch):
                end = min(start + batch, n)
                got = forward(images[start:end], pv[start:end, v])
                for name in names:
                    out[name][start:end, v] = np.asarray(got[name])
        results.append(out)
    if len(results) == 1:
        return results[0]
    return {name: mean_probability_logits([r[name] for r in results]) for name in names}


def make_teacher(cfg: Config, out: str | Path, data_dir: str | None = None,
                 split_file: str | Path | None = None) -> Path:
    """Make (or finish) the teacher directory ``out``; returns its path.

    ``split_file``: the split to use (a run's, for the teacher made inline); else the
    directory's own, made from ``cfg.data`` when it has none.
    """
    if cfg.augment.views < 1:
        raise KdskinError("kdskin teach stores targets for augment.views views of each training "
                          "image; set augment.views to at least 1 (e.g. --set augment.views=4)")
    t_start = time.time()
    tdir = TeacherDir(Path(out))
    info = tdir.load_info() if tdir.is_teacher_dir() else None
    if info is not None and info.complete and tdir.ensemble.is_file():
        log(f"{tdir.root}: the teacher directory is complete; nothing to do")
        return tdir.root
    if info is None and tdir.is_started():
        raise KdskinError(f"{tdir.root}: directory exists and is not a teacher directory; pass "
                          f"--out NEW_DIR")
    tdir.models.mkdir(parents=True, exist_ok=True)
    if split_file is not None and Path(split_file).resolve() != tdir.split.resolve():
        shutil.copyfile(split_file, tdir.split)
    members = cfg.teacher_members()
    folds = cfg.teach.folds
    from kdskin.bench import machine_info
    from kdskin.data.views import view_settings

    first = _member_cfg(cfg, members[0][1])
    data = prepare_data(first, tdir, data_dir)
    cfg.data.dir = first.data.dir
    digest = split_digest(tdir.split)
    if info is None:
        info = TeacherInfo(split_digest=digest, data=data.source, folds=folds, tta=cfg.teach.tta,
                           views={"k": cfg.augment.views, "seed": cfg.augment.view_seed,
                                  "settings": view_settings(cfg.augment)},
                           machine=machine_info())
    elif info.split_digest != digest:
        raise KdskinError(f"{tdir.root}: its split changed (digest {info.split_digest} -> "
                          f"{digest}); make the teacher in a new --out directory")
    cfg.save(tdir.config)
    fold_of = _folds(cfg, tdir, data, folds)
    save_arrays(tdir.views_file, image_ids=np.array(data.train_ids), views=data.train_views,
                folds=fold_of)
    sizes = {name: cfg.member_image_size(m) for name, m in members}
    info.image_size = max(sizes.values())
    tdir.save_info(info)

    by_size: dict[int, RunData] = {sizes[members[0][0]]: data}
    for name, member in members:
        size = sizes[name]
        mcfg = _member_cfg(cfg, member)
        if size not in by_size:
            by_size[size] = prepare_data(mcfg, tdir, split_file=tdir.split)
        _make_member(mcfg, tdir, info, name, member, by_size[size], fold_of)
        _store_member(cfg, tdir, info, name, by_size[size], fold_of)

    _finish_ensemble(cfg, tdir, info, members, sizes, by_size)
    info.seconds["total"] = round(info.seconds.get("total", 0.0) + time.time() - t_start, 1)
    info.complete = True
    tdir.save_info(info)
    write_teacher_card(tdir, info)
    log(f"teacher directory {tdir.root}: {len(members)} member(s) x {folds} fold(s), "
        f"{cfg.augment.views} stored views per training image; card: {tdir.card}")
    return tdir.root


def _folds(cfg: Config, tdir: TeacherDir, data: RunData, folds: int) -> np.ndarray:
    """``(N,)`` fold of each training image (lesion-grouped, stratified); zeros for one fold."""
    n = len(data.train_ids)
    if folds == 1:
        return np.zeros(n, np.int64)
    from kdskin.data.split import lesion_folds, read_split

    split = read_split(tdir.split)
    lesion = dict(zip(split["image_id"], split["lesion_id"], strict=True))
    return lesion_folds(data.train_ids, data.train_labels,
                        [str(lesion[i]) for i in data.train_ids], folds, cfg.data.seed)


def _make_member(cfg: Config, tdir: TeacherDir, info: TeacherInfo, name: str,
                 member: TeacherConfig, data: RunData, fold_of: np.ndarray) -> None:
    """Train (or adopt) every fold model of ``name`` not yet recorded; record each at once."""
    from kdskin.distill.stages import teacher_trains_shifted
    from kdskin.models import build_teacher
    from kdskin.models.contract import count_params

    adopt = cfg.teach.adopt.get(name)
    entry = info.members.setdefault(name, {
        "config": {"adopted_from": adopt} if adopt else _plain(member),
        "image_size": cfg.data.image_size, "models": {}})
    names = model_names(name, info.folds)

    def build() -> Any:
        return build_teacher(member, cfg.data.image_size, colour_constancy=cfg.data.colour_spec(),
                             border_fill=cfg.data.border_fill)

    for f, mname in enumerate(names):
        if mname in entry["models"] and tdir.model(mname).is_file():
            log(f"{mname}: already made in {tdir.root}, reusing it")
            continue
        t0 = time.time()
        if adopt is not None:
            model = _adopt(tdir, info, mname, adopt, cfg.data.image_size)
            seconds, how = 0.0, f"adopted from {adopt}"
        else:
            part = data
            if info.folds > 1:
                from kdskin.data.pipeline import class_weights

                idx = np.flatnonzero(fold_of != f)
                cw = (class_weights(data.train_labels[idx], cfg.data.class_weight_power)
                      if cfg.data.balance == "class_weight" else None)
                part = data.train_subset(idx, cw)
            model, _, seconds = train_classifier(
                cfg, part, tdir, mname, build,
                member.epochs, member.learning_rate, exit_weight=member.exit_loss_weight,
                shift=teacher_trains_shifted(cfg.distill.teacher_view))
            how = "trained" + (f" on the folds other than {f}" if info.folds > 1 else "")
        test, val, _, _ = evaluate_model(model, data)
        entry["models"][mname] = {"fold": f if info.folds > 1 else None, "how": how,
                                  "params": count_params(model),
                                  "train_seconds": round(seconds, 1), "val": val, "test": test}
        info.seconds[mname] = round(time.time() - t0, 1)
        tdir.save_info(info)
        log(f"{mname}: validation balanced accuracy {val['balanced_accuracy']:.4f}, AUC "
            f"{val['macro_auc']:.4f}; test {test['balanced_accuracy']:.4f} / "
            f"{test['macro_auc']:.4f}")


def _adopt(tdir: TeacherDir, info: TeacherInfo, mname: str, path: str, size: int) -> Any:
    """A model trained elsewhere on this split (``teach.adopt``), copied into the directory."""
    from kdskin.models.contract import input_size, load_keras, mark_trained

    src = Path(path)
    if info.folds > 1:
        raise KdskinError(f"teach.adopt.{mname}: an adopted model trained on the whole training "
                          f"split has no out-of-fold targets; use teach.folds 1")
    if not src.is_file():
        raise KdskinError(f"teach.adopt: {src} not found; pass a .keras model a kdskin run "
                          f"trained (RUN/models/NAME.keras)")
    run = RunDir.of_model(src)
    if run is None or not run.split.is_file() or split_digest(run.split) != info.split_digest:
        raise KdskinError(f"teach.adopt: {src} is not from a run on this split (its run's "
                          f"split.csv must be the teacher directory's, digest "
                          f"{info.split_digest}); pass --split RUN/split.csv to kdskin teach "
                          f"or train the member here")
    model = load_keras(src)
    if input_size(model) != size:
        raise KdskinError(f"teach.adopt: {src} takes {input_size(model)}px images; the member's "
                          f"image_size is {size}: set it to {input_size(model)}")
    shutil.copyfile(src, tdir.model(mname))
    return mark_trained(model)


def _plain(member: TeacherConfig) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(member)


def _load(tdir: TeacherDir, mname: str) -> Any:
    from kdskin.models.contract import load_keras, mark_trained

    model = mark_trained(load_keras(tdir.model(mname)))
    model.name = mname  # distinct names inside the ensemble
    return model


def _store_member(cfg: Config, tdir: TeacherDir, info: TeacherInfo, name: str, data: RunData,
                  fold_of: np.ndarray) -> None:
    """The member's stored targets ``targets/NAME.npz`` (each training image's outputs from the
    model that did not train on it when there are folds) and their training-split figures."""
    entry = info.members[name]
    if "store" in entry and tdir.member_targets(name).is_file():
        return
    if data.train_files is not None:
        raise KdskinError("kdskin teach stores targets from the decoded training split; use "
                          "data.pipeline memory")
    t0 = time.time()
    views = data.train_views
    parts: dict[str, np.ndarray] = {}
    for f, mname in enumerate(model_names(name, info.folds)):
        rows = np.flatnonzero(fold_of == f) if info.folds > 1 else np.arange(len(views))
        log(f"{mname}: storing its outputs for {views.shape[1]} views of {len(rows):,} training "
            f"images" + (" (with their mirror images)" if info.tta == "flip" else ""))
        got = stored_outputs(_load(tdir, mname), data.train.images[rows], views[rows], info.tta)
        for out, arr in got.items():
            parts.setdefault(out, np.zeros((len(views),) + arr.shape[1:], np.float32))[rows] = arr
    save_arrays(tdir.member_targets(name), **parts)
    probs = _view_mean_probs(parts["logits"])
    entry["store"] = {"outputs": sorted(parts), "seconds": round(time.time() - t0, 1),
                      "bytes": tdir.member_targets(name).stat().st_size,
                      "train_oof" if info.folds > 1 else "train_seen":
                          _summary(data.train_labels, probs)}
    tdir.save_info(info)


def _view_mean_probs(logits: np.ndarray) -> np.ndarray:
    """``(N, C)`` probabilities averaged over the views of ``(N, K, C)`` logits."""
    from kdskin.distill.targets import log_softmax

    return np.exp(log_softmax(logits)).mean(axis=1)


def _finish_ensemble(cfg: Config, tdir: TeacherDir, info: TeacherInfo,
                     members: list[tuple[str, TeacherConfig]], sizes: dict[str, int],
                     by_size: dict[int, RunData]) -> None:
    """``teacher.keras``, its validation/test figures (the mean of every model's
    probabilities), the checks, the store's figures."""
    from kdskin.distill.distiller import check_teacher_trained
    from kdskin.io import atomic_write
    from kdskin.models.ensemble import build_ensemble

    names = [m for name, _ in members for m in model_names(name, info.folds)]
    models = [_load(tdir, m) for m in names]
    ensemble = build_ensemble(models, image_size=info.image_size)
    big = by_size[info.image_size]
    check_teacher_trained(ensemble, (big.val.images, big.val.labels))
    atomic_write(tdir.ensemble, lambda tmp: ensemble.save(tmp))
    figures: dict[str, Any] = {}
    for part in ("val", "test"):
        probs = [_probs(models[names.index(m)], getattr(by_size[sizes[name]], part).images)
                 for name, _ in members for m in model_names(name, info.folds)]
        figures[part] = _summary(getattr(big, part).labels, np.mean(probs, axis=0))
    stores = [load_arrays(tdir.member_targets(name))["logits"] for name, _ in members]
    from kdskin.distill.targets import ensemble_logits

    key = "train_oof" if info.folds > 1 else "train_seen"
    figures[key] = _summary(big.train_labels, _view_mean_probs(ensemble_logits(stores, 1.0)))
    info.ensemble = figures
    outputs = set.intersection(*(set(info.members[n]["store"]["outputs"]) for n, _ in members))
    info.store = {"outputs": sorted(outputs), "views": cfg.augment.views, "tta": info.tta,
                  "bytes": sum(tdir.member_targets(n).stat().st_size for n, _ in members)
                  + tdir.views_file.stat().st_size,
                  "seconds": round(sum(info.members[n]["store"]["seconds"] for n, _ in members),
                                   1)}
    log(f"teacher ensemble: validation balanced accuracy {figures['val']['balanced_accuracy']:.4f}"
        f", AUC {figures['val']['macro_auc']:.4f}; test {figures['test']['balanced_accuracy']:.4f}"
        f" / {figures['test']['macro_auc']:.4f}; on its stored training views "
        f"{figures[key]['balanced_accuracy']:.4f} (mean top-1 {figures[key]['mean_top1']:.3f})")


_SCORED_BY = {"train_oof": "each image scored by the models that did not train on it",
              "train_seen": "scored by the models that trained on them"}


def write_teacher_card(tdir: TeacherDir, info: TeacherInfo) -> Path:
    """``TEACHER_CARD.md``: what the teacher is, its figures, its store."""
    from kdskin.io import atomic_write_text
    from kdskin.markdown import table

    rows = []
    for entry in info.members.values():
        for mname, m in entry["models"].items():
            rows.append([mname, entry["image_size"], m["how"], m["params"],
                         m["val"]["balanced_accuracy"], m["val"]["macro_auc"],
                         m["test"]["balanced_accuracy"], m["test"]["macro_auc"]])
    e = info.ensemble
    rows.append(["ensemble (teacher.keras)", info.image_size, "mean of the probabilities", "",
                 e["val"]["balanced_accuracy"], e["val"]["macro_auc"],
                 e["test"]["balanced_accuracy"], e["test"]["macro_auc"]])
    key = "train_oof" if info.folds > 1 else "train_seen"
    s = info.store
    lines = [
        f"# Teacher card: {tdir.root.name}", "",
        f"Data: {info.data}; split digest {info.split_digest}; classes {', '.join(info.classes)}.",
        "Research software, not a medical device.", "",
        table(["model", "input px", "made", "parameters", "val bal. acc.", "val AUC",
               "test bal. acc.", "test AUC"], rows, digits=4), "",
        f"Stored targets: {s['views']} views per training image (seed {info.views['seed']}), "
        f"test-time augmentation {info.tta}, outputs {', '.join(s['outputs'])}; "
        f"{s['bytes'] / 1e6:.1f} MB, made in {s['seconds'] / 60:.1f} min.",
        f"On those views ({_SCORED_BY[key]}): "
        f"balanced accuracy {e[key]['balanced_accuracy']:.4f}, mean top-1 probability "
        f"{e[key]['mean_top1']:.3f}.", "",
        f"Made in {info.seconds.get('total', 0) / 60:.1f} min on {info.machine.get('cpu', '?')}."
        f" Use it with `kdskin run --config CONFIG --teacher {tdir.root}`.", ""]
    return atomic_write_text(tdir.card, "\n".join(lines))


__all__ = ["STORE_BATCH", "make_teacher", "model_names", "stored_outputs", "write_teacher_card"]
