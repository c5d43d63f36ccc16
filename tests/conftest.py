"""Shared fixtures: tiny datasets written on the fly (no real data, no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # 2 does not silence TF 2.21

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from kdskin.constants import CLASSES  # noqa: E402

SHARED_HAM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000"
SHARED_ISIC = SHARED_HAM.parent / "isic2018_dev"


def write_ham(root: Path, per_class: int = 6, images_per_lesion: int = 2, size: int = 40,
              sep: str = ",", name: str = "HAM10000_metadata.csv", with_ext: bool = False,
              seed: int = 0) -> pd.DataFrame:
    """A tiny HAM10000-layout folder: colour-coded images, several images per lesion."""
    rng = np.random.default_rng(seed)
    rows = []
    n = 0
    for c, dx in enumerate(CLASSES):
        for i in range(per_class):
            lesion = f"HAM_{c:02d}{i // images_per_lesion:04d}"
            image_id = f"IMG_{n:05d}"
            part = root / ("HAM10000_images_part_1" if n % 2 else "HAM10000_images_part_2")
            part.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            pixels[..., c % 3] += np.uint8(120 + 20 * (c // 3))
            Image.fromarray(pixels).save(part / f"{image_id}.jpg", quality=95)
            rows.append({"lesion_id": lesion, "image_id": image_id + (".jpg" if with_ext else ""),
                         "dx": dx, "dx_type": "histo", "age": "50.0", "sex": "male",
                         "localization": "back"})
            n += 1
    table = pd.DataFrame(rows)
    table.to_csv(root / name, index=False, sep=sep)
    return table


def write_isic(root: Path, n_per_class: int = 3) -> pd.DataFrame:
    """A tiny ISIC 2018 Task 3 folder: one-hot ground-truth CSV beside a folder of images."""
    cols = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    rows = []
    img_dir = root / "ISIC2018_Task3_Test_Input"
    img_dir.mkdir(parents=True)
    for k, col in enumerate(cols):
        for i in range(n_per_class):
            name = f"ISIC_{k}{i:06d}"
            Image.fromarray(np.full((30, 40, 3), 20 * k, np.uint8)).save(img_dir / f"{name}.jpg")
            rows.append({"image": name, **{c: float(c == col) for c in cols}})
    gt = pd.DataFrame(rows)
    gt.to_csv(root / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    return gt


@pytest.fixture
def ham_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ham"
    write_ham(root)
    return root


@pytest.fixture
def shared_ham() -> Path:
    if not (SHARED_HAM / "HAM10000_metadata.csv").is_file():
        pytest.skip("../shared/data/ham10000 is not present")
    return SHARED_HAM


@pytest.fixture
def shared_isic() -> Path:
    if not (SHARED_ISIC / "ISIC2018_Task3_Test_GroundTruth.csv").is_file():
        pytest.skip("../shared/data/isic2018_dev is not present")
    return SHARED_ISIC
