"""``kdskin teach``: make a teacher directory once, for runs to reuse (``kdskin run --teacher``)."""

from __future__ import annotations

from pathlib import Path

from kdskin.config import Config


def teach_command(cfg: Config, out: str, data_dir: str | None = None,
                  split_file: str | None = None) -> Path:
    """Make (or finish) the teacher directory ``out`` (:func:`kdskin.pipeline.teach.
    make_teacher`); print its path."""
    from kdskin.pipeline.teach import make_teacher

    tdir = make_teacher(cfg, out, data_dir=data_dir, split_file=split_file)
    print(f"teacher directory: {tdir}")
    return tdir
