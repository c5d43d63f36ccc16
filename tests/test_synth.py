"""The built-in generated dataset: layout, determinism, imbalance, learnability, safety."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kdskin.cli import main
from kdskin.constants import CLASSES
from kdskin.data.datasets import read_dataset
from kdskin.data.synth import (
    IMAGE_DIRS,
    METADATA_COLUMNS,
    METADATA_FILE,
    class_counts,
    generate_dataset,
)
from kdskin.errors import DataError

N = 120


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ham"
    generate_dataset(out, n_images=N, image_size=32, seed=3)
    return out


def _digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_layout_is_ham10000(synth_dir):
    meta = pd.read_csv(synth_dir / METADATA_FILE)
    assert list(meta.columns) == list(METADATA_COLUMNS)
    assert len(meta) == N and meta["image_id"].is_unique
    assert set(meta["dx"]) == set(CLASSES)
    files = {p.stem: p for d in IMAGE_DIRS for p in (synth_dir / d).glob("*.jpg")}
    assert set(files) == set(meta["image_id"])
    assert all(len(list((synth_dir / d).glob("*.jpg"))) > 0 for d in IMAGE_DIRS)
    with Image.open(next(iter(files.values()))) as img:
        assert img.size == (32, 32) and img.mode == "RGB"
    # the project's own reader takes it as it is: no missing rows, no unreadable images
    dataset = read_dataset(synth_dir, "ham10000", strict=True)
    assert len(dataset.table) == N and not dataset.missing


def test_lesions_have_several_images_of_one_class(synth_dir):
    meta = pd.read_csv(synth_dir / METADATA_FILE)
    per_lesion = meta.groupby("lesion_id")
    assert (per_lesion.size() > 1).any(), "no repeat images of a lesion"
    assert (per_lesion["dx"].nunique() == 1).all(), "a lesion with two diagnoses"
    assert per_lesion.size().max() <= 4


def test_class_counts_keep_ham10000_order_and_every_class():
    counts = class_counts(900)
    assert sum(counts.values()) == 900
    assert max(counts, key=counts.get) == "nv"
    assert counts["nv"] > counts["mel"] > counts["bcc"] > counts["df"]
    assert min(class_counts(21).values()) == 3
    with pytest.raises(DataError, match="at least 21"):
        class_counts(20)


def test_same_seed_same_bytes_other_seed_differs(tmp_path, synth_dir):
    again = tmp_path / "again"
    generate_dataset(again, n_images=N, image_size=32, seed=3)
    assert _digest(again) == _digest(synth_dir)
    other = tmp_path / "other"
    generate_dataset(other, n_images=N, image_size=32, seed=4)
    assert _digest(other) != _digest(synth_dir)


def test_classes_differ_in_colour(synth_dir):
    """Learnable, not noise: mean colour differs between classes (vasc redder than nv)."""
    meta = pd.read_csv(synth_dir / METADATA_FILE)
    files = {p.stem: p for d in IMAGE_DIRS for p in (synth_dir / d).glob("*.jpg")}

    def mean_rgb(dx: str) -> np.ndarray:
        ids = meta.loc[meta["dx"] == dx, "image_id"]
        return np.mean([np.asarray(Image.open(files[i]), float).mean((0, 1)) for i in ids], 0)

    vasc, nv = mean_rgb("vasc"), mean_rgb("nv")
    assert vasc[0] - vasc[1] > nv[0] - nv[1]  # red minus green


def test_refuses_to_overwrite_without_flag_and_foreign_data(tmp_path, synth_dir):
    with pytest.raises(DataError, match="already exists"):
        generate_dataset(synth_dir, n_images=N, image_size=32)
    foreign = tmp_path / "real"
    foreign.mkdir()
    (foreign / METADATA_FILE).write_text("lesion_id,image_id,dx,dataset\nL1,I1,nv,vidir\n")
    with pytest.raises(DataError, match="not a kdskin-generated dataset"):
        generate_dataset(foreign, n_images=N, image_size=32, overwrite=True)
    assert (foreign / METADATA_FILE).read_text().startswith("lesion_id")


def test_cli_synth_writes_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "synth", "--out", str(out), "--n-images", "30", "--seed", "1"]) == 0
    assert "30 images" in capsys.readouterr().out
    assert len(pd.read_csv(out / METADATA_FILE)) == 30
    assert main(["data", "synth", "--out", str(out), "--n-images", "30"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_out_dir_is_required_and_checked(tmp_path):
    for bad in (None, "", 3):
        with pytest.raises(DataError, match=r"out_dir: expected the folder .*--out DIR"):
            generate_dataset(bad, n_images=N, image_size=32)
    assert list(tmp_path.iterdir()) == []


def test_written_files_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        generate_dataset(tmp_path / "s", n_images=21, image_size=16)
    finally:
        os.umask(old)
    meta = tmp_path / "s" / "HAM10000_metadata.csv"
    image = next((tmp_path / "s").rglob("*.jpg"))
    assert stat.S_IMODE(meta.stat().st_mode) == 0o644
    assert stat.S_IMODE(image.stat().st_mode) == 0o644
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".")]  # no temp file


def test_appearance_profiles_are_data_with_one_profile_per_class():
    from kdskin.data.synth import PROFILES_FILE, _load_profiles

    profiles = _load_profiles()
    assert PROFILES_FILE.suffix == ".yaml" and set(profiles) == set(CLASSES)
    keys = set(profiles["nv"])
    for dx, profile in profiles.items():
        assert set(profile) == keys, dx
        mean, sd = profile["radius"]
        assert 0 < mean < 1 and sd > 0
        assert abs(sum(profile["base"].values()) - 1.0) < 1e-6, dx
