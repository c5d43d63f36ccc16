"""The data of a run: generate (if needed), split, decode, class balance; and ``tf.data`` feeds.

:func:`prepare_data` is used by ``kdskin run`` (writes ``RUN/split.csv`` and the decode cache);
:func:`data_of_run` gives a finished run's data back to ``export --run`` / ``explain``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.config import Config
from kdskin.console import log
from kdskin.constants import CLASSES
from kdskin.data.pipeline import SplitArrays
from kdskin.data.stream import SplitFiles
from kdskin.errors import DataError, KdskinError
from kdskin.rundir import RunDir

#: ``data.pipeline: stream``: decoded training images kept in memory (a seeded sample) for the
#: int8 representative set and the out-of-scope statistics.
STREAM_SAMPLE = 2048


@dataclass
class RunData:
    """The decoded splits of a run and the class balance derived from the training split."""

    train: SplitArrays
    val: SplitArrays
    test: SplitArrays
    class_weight: dict[int, float] | None
    oversample: bool
    protocol: str
    source: str
    unreadable: list[str] = field(default_factory=list)
    rows_without_image: int = 0
    #: ``(7,)`` training-only logit offsets ``tau * log(prior)`` (balance ``logit_adjusted``)
    logit_adjustment: np.ndarray | None = None
    #: ``data.pipeline: stream``: the whole training split as files, fed by
    #: :func:`kdskin.data.stream.stream_dataset`; ``train`` then holds a decoded sample of it
    #: (at most :data:`STREAM_SAMPLE` images: the int8 representative set, the out-of-scope
    #: statistics) and ``train_labels`` the labels of the whole split.
    train_files: SplitFiles | None = None
    #: ``data.stream_cache``: prefix of the on-disk cache of decoded training images
    stream_cache: str | None = None
    #: ``augment.views`` > 0: ``(N, K, P)`` views of every training image
    #: (:func:`kdskin.data.views.draw_views`), replayed by every model's fit
    train_views: np.ndarray | None = None
    #: a teacher directory's stored targets for those views: ``{output: (N, K, C) logits}``
    train_targets: dict[str, np.ndarray] | None = None

    @property
    def train_ids(self) -> list[str]:
        """The image ids of the whole training split (streamed or in memory)."""
        return (self.train_files.image_ids if self.train_files is not None
                else self.train.image_ids)

    def train_subset(self, idx: np.ndarray, class_weight: dict[int, float] | None
                     ) -> RunData:
        """The same data with only the training images ``idx`` (a fold); validation and test
        unchanged. In-memory training split only."""
        if self.train_files is not None:
            raise KdskinError("teach.folds > 1 needs data.pipeline memory (the folds index "
                              "the decoded training split)")
        t = self.train
        part = SplitArrays(t.images[idx], t.labels[idx], [t.image_ids[i] for i in idx])
        views = None if self.train_views is None else self.train_views[idx]
        return replace(self, train=part, class_weight=class_weight, train_views=views,
                       train_targets=None)

    @property
    def train_labels(self) -> np.ndarray:
        """``(N,)`` labels of the whole training split (streamed or in memory)."""
        return self.train_files.labels if self.train_files is not None else self.train.labels


def _resolve_source(cfg: Config, run: RunDir, data_dir: str | None) -> str:
    """Set ``cfg.data.dir`` (generating the built-in dataset into the run if none is given);
    return a description of the data for reports."""
    if data_dir is None and cfg.data.dir is None:
        if not (run.data / "HAM10000_metadata.csv").is_file():
            from kdskin.data.synth import generate_dataset

            s = cfg.data.synth
            log(f"generating the built-in dataset ({s.n_images} images) in {run.data}")
            generate_dataset(run.data, n_images=s.n_images,
                             max_images_per_lesion=s.max_images_per_lesion,
                             image_size=s.image_size, seed=s.seed, progress=False)
        cfg.data.dir = str(run.data)
        return (f"built-in generated dataset ({cfg.data.synth.n_images} images, seed "
                f"{cfg.data.synth.seed})")
    cfg.data.dir = str(data_dir or cfg.data.dir)
    return cfg.data.dir


def prepare_data(cfg: Config, run: RunDir, data_dir: str | None = None,
                 split_file: str | Path | None = None) -> RunData:
    """Generate (if needed), split and decode the data of a run; ``cfg.data.dir`` is resolved.

    The split is read from ``split_file`` or ``run.split`` when present, else made and written
    to ``run.split``. Decoded arrays are cached in ``run.cache``.
    """
    from kdskin.data.datasets import read_dataset
    from kdskin.data.pipeline import class_weights, decode_split, logit_adjustment
    from kdskin.data.split import make_split, protocol_label, read_split, write_split

    source = _resolve_source(cfg, run, data_dir)
    dataset = read_dataset(cfg.data.dir, cfg.data.format, strict=cfg.data.strict)
    if dataset.missing:
        log(f"{len(dataset.missing):,} of {dataset.rows:,} metadata rows have no image file; "
            f"skipped")
    if split_file is not None:
        split = read_split(split_file)
    elif run.split.is_file():
        split = read_split(run.split)
    else:
        split = make_split(dataset.table, cfg.data.protocol, cfg.data.split, cfg.data.seed,
                           cfg.data.paper_per_class)
        write_split(split, run.split)
    log(f"split: {protocol_label(cfg.data.protocol)}")
    files = None
    if cfg.data.pipeline == "stream":
        files, split = _stream_files(cfg, dataset, split)
    arrays, errors = decode_split(dataset, split, cfg.data.image_size, cache_dir=run.cache,
                                  seed=cfg.data.seed, progress=True)
    if files is not None:
        arrays["train"] = _decoded_sample(files, cfg.data.image_size, cfg.data.seed)
        log(f"train: {len(files):,} images streamed from the files (data.pipeline stream), "
            f"{len(arrays['train']):,} decoded for export and the out-of-scope check")
    for err in errors:
        log(f"skipped unreadable image: {err}")
    for name, part in arrays.items():
        labels = files.labels if name == "train" and files is not None else part.labels
        counts = np.bincount(labels, minlength=len(CLASSES))
        log(f"{name}: {len(labels):,} images  " + " ".join(
            f"{c}={n}" for c, n in zip(CLASSES, counts, strict=True)))
        if len(labels) == 0:
            raise DataError(f"the {name} split is empty; use more data or change data.split")
    train_labels = files.labels if files is not None else arrays["train"].labels
    cw = (class_weights(train_labels, cfg.data.class_weight_power)
          if cfg.data.balance == "class_weight" else None)
    adjust = (logit_adjustment(train_labels, cfg.data.logit_adjust_tau)
              if cfg.data.balance == "logit_adjusted" else None)
    cache = (str(run.cache / f"stream_{cfg.data.image_size}_{len(files)}")
             if files is not None and cfg.data.stream_cache else None)
    if cache is not None:
        run.cache.mkdir(parents=True, exist_ok=True)
    views = None
    if cfg.augment.views > 0:
        from kdskin.data.views import draw_views

        views = draw_views(len(train_labels), cfg.augment.views, cfg.augment,
                           cfg.augment.view_seed)
    return RunData(arrays["train"], arrays["val"], arrays["test"], cw,
                   cfg.data.balance == "oversample", cfg.data.protocol, source, errors,
                   len(dataset.missing), adjust, files, cache, views)


def teacher_data(cfg: Config, run: RunDir, data: RunData) -> RunData:
    """The run's splits at the teacher's input size (:meth:`Config.teacher_image_size`):
    ``data`` itself when it equals ``data.image_size``, else the same split decoded again at
    that size (cached beside the student's), with the same class balance."""
    import copy

    size = cfg.teacher_image_size()
    if size == cfg.data.image_size:
        return data
    log(f"teacher data: the split decoded again at {size}x{size} (teacher.image_size; the "
        f"student sees {cfg.data.image_size}x{cfg.data.image_size})")
    at_size = copy.deepcopy(cfg)
    at_size.data.image_size = size
    big = prepare_data(at_size, run, split_file=run.split)
    big.source = data.source
    return big


def _stream_files(cfg: Config, dataset: Any, split: Any) -> tuple[SplitFiles, Any]:
    """The training split as files, and the split without its training rows (decoded)."""
    if cfg.data.protocol != "lesion_grouped":
        raise KdskinError(f"data.pipeline stream reads each training image from its file; the "
                          f"{cfg.data.protocol!r} protocol's augmented copies exist only in "
                          f"memory: use data.pipeline=memory with it")
    path_of = dict(zip(dataset.table["image_id"], dataset.table["path"], strict=True))
    label_of = dict(zip(dataset.table["image_id"], dataset.table["label"], strict=True))
    rows = split[split["split"] == "train"]
    unknown = sorted(set(rows["image_id"]) - set(path_of))
    if unknown:
        raise DataError(f"split lists {len(unknown)} image(s) not in the dataset (first: "
                        f"{unknown[0]}); recreate the split for this data folder")
    ids = rows["image_id"].tolist()
    files = SplitFiles([str(path_of[i]) for i in ids],
                       np.array([label_of[i] for i in ids], np.int64), ids)
    return files, split[split["split"] != "train"]


def _decoded_sample(files: SplitFiles, image_size: int, seed: int) -> SplitArrays:
    """A seeded sample of at most :data:`STREAM_SAMPLE` training images, decoded."""
    from kdskin.data.images import load_images

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(files), size=min(len(files), STREAM_SAMPLE), replace=False))
    images, kept, _ = load_images([files.paths[i] for i in idx], image_size)
    idx = idx[kept]
    return SplitArrays(images, files.labels[idx], [files.image_ids[i] for i in idx])


def data_of_run(run: RunDir, cfg: Config, data: str | None = None,
                split_file: str | None = None) -> RunData:
    """The data of a finished run (its data folder, split and decode cache), or ``data`` with
    ``split_file`` instead. Nothing is written into the run."""
    import tempfile

    if data is None and cfg.data.dir is None:
        raise KdskinError(f"{run.root}: the run's config names no data folder; pass --data DIR")
    scratch = RunDir(Path(tempfile.mkdtemp(prefix="kdskin-")))
    split = split_file or (run.split if data is None and run.split.is_file() else None)
    if run.cache.is_dir() and data is None:
        scratch.cache.symlink_to(run.cache.resolve())
    return prepare_data(cfg, scratch, data, split_file=split)


def data_of_model(cfg: Config, model: str | Path, data: str | None = None,
                  split_file: str | None = None) -> tuple[RunData, Config]:
    """The data a command uses for ``model``: ``data`` (with ``split_file``), or the data, split
    and config of the run the model belongs to. Returns the data and the config it used."""
    from kdskin.config import load_config

    run = RunDir.of_model(model)
    if data is None and run is None:
        raise KdskinError(f"{model}: the model is not inside a run directory; pass --data DIR")
    if run is not None and data is None:
        cfg = load_config(run.config)
    return data_of_run(run or RunDir(Path(model).parent), cfg, data, split_file), cfg


def datasets(cfg: Config, data: RunData, batch: int, targets: Any = None,
             train_from: RunData | None = None, unshifted_view: bool = False,
             shift: bool = True, epochs: int = 1, start_epoch: int = 0,
             stored: bool = False) -> tuple[Any, Any, int | None]:
    """``(train, val)`` ``tf.data`` pipelines: augmentation and balance on train only.
    ``train_from``: where the training split comes from instead of ``data`` (the splits at a
    larger teacher's size, :func:`teacher_data`); validation is always ``data``'s.
    ``unshifted_view``: training images also before the shift augmentation, for the teacher
    (:func:`kdskin.data.pipeline.finish_batches`). ``shift=False``: without ``augment.shift``
    (the teacher of ``distill.teacher_view: unshifted``).

    With ``augment.views`` > 0 the training batches replay the views of ``data.train_views``
    (:func:`kdskin.data.replay.replay_dataset`) for epochs ``start_epoch .. epochs - 1``, with
    the stored targets when ``stored``; the third value is then the steps per epoch to pass to
    ``fit`` (None otherwise)."""
    from kdskin.data.pipeline import make_tf_dataset

    source = train_from or data
    augment = cfg.augment if shift else replace(
        cfg.augment, shift=replace(cfg.augment.shift, enabled=False))
    val = make_tf_dataset(data.val.images, data.val.labels, batch, targets=targets)
    if cfg.augment.views > 0:
        from kdskin.data.replay import replay_dataset

        if source.train_views is None:
            raise KdskinError("augment.views > 0 but the run's data has no views; prepare the "
                              "data with this config")
        if stored and not source.train_targets:
            raise KdskinError("stored targets asked for, but the data carries none; pass a "
                              "teacher directory (--teacher DIR)")
        files = source.train_files
        train, steps = replay_dataset(
            source.train_labels, source.train_views, batch, epochs,
            images=None if files is not None else source.train.images,
            paths=files.paths if files is not None else None,
            image_size=cfg.data.image_size, targets=source.train_targets if stored else None,
            start_epoch=start_epoch, seed=cfg.train.seed, oversample=source.oversample,
            shift=augment.shift if augment.enabled else None, outputs=targets)
        return train, val, steps
    if source.train_files is not None:
        from kdskin.data.stream import stream_dataset

        train = stream_dataset(source.train_files, cfg.data.image_size, batch, training=True,
                               augment=augment, oversample=source.oversample,
                               seed=cfg.train.seed, shuffle_buffer=cfg.data.shuffle_buffer,
                               cache_file=source.stream_cache, targets=targets,
                               unshifted_view=unshifted_view)
    else:
        train = make_tf_dataset(source.train.images, source.train.labels, batch, training=True,
                                augment=augment, oversample=source.oversample,
                                seed=cfg.train.seed, targets=targets,
                                unshifted_view=unshifted_view)
    return train, val, None
