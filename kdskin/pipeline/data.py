"""The data of a run: generate (if needed), split, decode, class balance; and ``tf.data`` feeds.

:func:`prepare_data` is used by ``kdskin run`` (writes ``RUN/split.csv`` and the decode cache);
:func:`data_of_run` gives a finished run's data back to ``export --run`` / ``explain``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.config import Config
from kdskin.console import log
from kdskin.constants import CLASSES
from kdskin.data.pipeline import SplitArrays
from kdskin.errors import DataError, KdskinError
from kdskin.rundir import RunDir


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
    arrays, errors = decode_split(dataset, split, cfg.data.image_size, cache_dir=run.cache,
                                  seed=cfg.data.seed, progress=True)
    for err in errors:
        log(f"skipped unreadable image: {err}")
    for name, part in arrays.items():
        counts = np.bincount(part.labels, minlength=len(CLASSES))
        log(f"{name}: {len(part):,} images  " + " ".join(
            f"{c}={n}" for c, n in zip(CLASSES, counts, strict=True)))
        if len(part) == 0:
            raise DataError(f"the {name} split is empty; use more data or change data.split")
    train = arrays["train"]
    cw = (class_weights(train.labels, cfg.data.class_weight_power)
          if cfg.data.balance == "class_weight" else None)
    adjust = (logit_adjustment(train.labels, cfg.data.logit_adjust_tau)
              if cfg.data.balance == "logit_adjusted" else None)
    return RunData(train, arrays["val"], arrays["test"], cw, cfg.data.balance == "oversample",
                   cfg.data.protocol, source, errors, len(dataset.missing), adjust)


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


def datasets(cfg: Config, data: RunData, batch: int, targets: Any = None) -> tuple[Any, Any]:
    """``(train, val)`` ``tf.data`` pipelines: augmentation and balance on train only."""
    from kdskin.data.pipeline import make_tf_dataset

    train = make_tf_dataset(data.train.images, data.train.labels, batch, training=True,
                            augment=cfg.augment, oversample=data.oversample,
                            seed=cfg.train.seed, targets=targets)
    val = make_tf_dataset(data.val.images, data.val.labels, batch, targets=targets)
    return train, val
