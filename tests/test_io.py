"""kdskin.io: the one file writer (permissions follow the umask, atomic, JSON round trip)."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from kdskin.io import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_dir,
    atomic_write_text,
    read_json,
    write_json,
)


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    text = atomic_write_text(tmp_path / "a" / "report.md", "hello\n")
    data = atomic_write_bytes(tmp_path / "model.tflite", b"\x00\x01")
    js = write_json(tmp_path / "metrics.json", {"a": 1})
    via_callback = atomic_write(tmp_path / "plot.png", lambda tmp: tmp.write_bytes(b"png"))
    for path in (text, data, js, via_callback):
        assert _mode(path) == expected, path
    assert text.read_text() == "hello\n" and data.read_bytes() == b"\x00\x01"


def test_replacing_a_file_keeps_the_umask_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "labels.txt"
    target.write_text("old\n")
    target.chmod(0o600)
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert _mode(target) == 0o644


def test_an_exception_leaves_no_temp_file_and_the_old_content(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half writ")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_new_file_is_not_created_when_writing_fails(tmp_path):
    with pytest.raises(ValueError):
        atomic_write(tmp_path / "out.bin", lambda tmp: (_ for _ in ()).throw(ValueError("x")))
    assert list(tmp_path.iterdir()) == []


def test_temp_file_keeps_the_suffix_for_format_sniffing_writers(tmp_path):
    seen = []
    atomic_write(tmp_path / "maps.npz", lambda tmp: seen.append(tmp) or np.savez(str(tmp), a=[1]))
    assert seen[0].name.endswith(".npz") and seen[0].parent == tmp_path
    with np.load(tmp_path / "maps.npz") as npz:
        assert npz["a"].tolist() == [1]


def test_json_round_trip_converts_numpy_paths_and_non_finite(tmp_path):
    data = {"int": np.int64(3), "float": np.float32(0.5), "array": np.arange(3),
            "nested": {1: [np.float64(1.25), Path("a/b")]}, "nan": math.nan,
            "inf": float("inf"), "text": "é", "none": None, "tuple": (1, 2)}
    path = write_json(tmp_path / "m.json", data)
    assert read_json(path) == {"int": 3, "float": 0.5, "array": [0, 1, 2],
                               "nested": {"1": [1.25, "a/b"]}, "nan": None, "inf": None,
                               "text": "é", "none": None, "tuple": [1, 2]}
    assert path.read_text().endswith("\n")


def test_atomic_write_dir_renames_a_whole_folder_into_place_or_leaves_nothing(tmp_path):
    def write(folder):
        (folder / "a.txt").write_text("a")
        (folder / "sub").mkdir()

    old = os.umask(0o022)
    try:
        out = atomic_write_dir(tmp_path / "out", write)
    finally:
        os.umask(old)
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "sub"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # not mkdtemp's 0700
    empty = tmp_path / "empty"
    empty.mkdir()
    atomic_write_dir(empty, write)  # an empty folder is replaced
    assert (empty / "a.txt").read_text() == "a"

    def fail(folder):
        (folder / "half.txt").write_text("half")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        atomic_write_dir(tmp_path / "failed", fail)
    with pytest.raises(OSError):  # a folder with content is not replaced
        atomic_write_dir(out, write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out"]
    assert (out / "a.txt").read_text() == "a"
