from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kdskin.config import AugmentConfig
from kdskin.constants import CLASSES, NUM_CLASSES
from kdskin.data.datasets import read_dataset, read_ham10000, read_isic2018
from kdskin.data.images import load_image, load_images
from kdskin.data.pipeline import class_weights, decode_split, logit_adjustment, make_tf_dataset
from kdskin.data.split import (
    lesion_grouped_split,
    lesions_in_several_splits,
    make_split,
    paper_split,
    read_split,
    write_split,
)
from kdskin.errors import DataError

from .conftest import write_ham, write_isic

# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "CMYK", "P", "I;16"])
def test_any_mode_becomes_rgb_at_size(tmp_path, mode):
    arr = (np.arange(30 * 50 * 3) % 251).reshape(30, 50, 3).astype(np.uint8)
    img = Image.fromarray(arr).convert(mode) if mode != "I;16" else Image.fromarray(
        arr[..., 0].astype(np.uint16) * 200)
    path = tmp_path / ("x.png" if mode != "CMYK" else "x.jpg")
    img.save(path)
    out = load_image(path, 24)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8


def test_truncated_and_garbage_images_are_reported_and_skipped(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.full((20, 20, 3), 100, np.uint8)).save(good)
    data = good.read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    paths = [good, tmp_path / "trunc.jpg", tmp_path / "junk.jpg"]
    images, kept, errors = load_images(paths, 16)
    assert kept == [0] and images.shape == (1, 16, 16, 3)
    assert len(errors) == 2
    assert any("trunc.jpg" in e for e in errors) and any("junk.jpg" in e for e in errors)
    with pytest.raises(DataError, match="junk.jpg"):
        load_image(tmp_path / "junk.jpg", 16)


# --------------------------------------------------------------------------- HAM10000 loader


def test_ham10000_reads_csv_and_finds_images_in_subfolders(ham_dir):
    ds = read_ham10000(ham_dir)
    assert len(ds) == 6 * NUM_CLASSES and ds.missing == []
    assert list(ds.table.columns) == ["image_id", "lesion_id", "dx", "label", "path"]
    assert set(ds.table["dx"]) == set(CLASSES)
    assert (ds.table["label"] == ds.table["dx"].map(CLASSES.index)).all()
    assert all(Path(p).is_file() for p in ds.table["path"])


def test_ham10000_accepts_tab_separated_and_ids_with_extension(tmp_path):
    write_ham(tmp_path, sep="\t", name="HAM10000_metadata.tab", with_ext=True)
    ds = read_ham10000(tmp_path)
    assert len(ds) == 6 * NUM_CLASSES
    assert not ds.table["image_id"].str.endswith(".jpg").any()


def test_missing_images_are_counted_then_skipped_or_strict(ham_dir):
    victims = sorted(ham_dir.rglob("*.jpg"))[:3]
    for v in victims:
        v.unlink()
    ds = read_ham10000(ham_dir)
    assert len(ds.missing) == 3 and len(ds) == 6 * NUM_CLASSES - 3
    assert ds.rows == 6 * NUM_CLASSES
    with pytest.raises(DataError, match="3 of 42 rows have no image"):
        read_ham10000(ham_dir, strict=True)


def test_unknown_dx_missing_column_and_empty_result(tmp_path):
    table = write_ham(tmp_path)
    table.loc[0, "dx"] = "melanomaa"
    table.to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    with pytest.raises(DataError, match="unknown dx value.*melanomaa"):
        read_ham10000(tmp_path)
    table.drop(columns=["lesion_id"]).to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    with pytest.raises(DataError, match="missing column.*lesion_id"):
        read_ham10000(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    write_ham(empty)
    for p in empty.rglob("*.jpg"):
        p.unlink()
    with pytest.raises(DataError, match="none of the 42 rows has an image"):
        read_ham10000(empty)
    with pytest.raises(DataError, match="no HAM10000_metadata"):
        read_ham10000(tmp_path / "HAM10000_images_part_1")


def test_empty_metadata_file_is_a_clear_error(tmp_path):
    (tmp_path / "HAM10000_metadata.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_ham10000(tmp_path)


# --------------------------------------------------------------------------- ISIC 2018 loader


def test_isic2018_one_hot_csv(tmp_path):
    write_isic(tmp_path)
    ds = read_dataset(tmp_path, "isic2018")
    assert len(ds) == 21
    first = ds.table.set_index("image_id").loc["ISIC_0000000"]
    assert first["dx"] == "mel" and first["label"] == CLASSES.index("mel")
    assert ds.table.set_index("image_id").loc["ISIC_6000000", "dx"] == "vasc"


def test_isic2018_checks(tmp_path):
    gt = write_isic(tmp_path)
    (tmp_path / "ISIC2018_Task3_Test_Input" / "ISIC_0000000.jpg").unlink()
    assert len(read_isic2018(tmp_path).missing) == 1
    with pytest.raises(DataError, match="1 of 21 rows"):
        read_isic2018(tmp_path, strict=True)
    gt.loc[2, "NV"] = 1.0
    gt.to_csv(tmp_path / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    with pytest.raises(DataError, match="not one-hot"):
        read_isic2018(tmp_path)
    (tmp_path / "ISIC2018_Task3_Test_GroundTruth.csv").write_text("image,MEL\nx,1\n")
    with pytest.raises(DataError, match="no ISIC 2018 ground-truth CSV"):
        read_isic2018(tmp_path)


# --------------------------------------------------------------------------- split


def _lesion_table(n_lesions_per_class=(30, 20, 40, 8, 40, 200, 9), seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for c, n in enumerate(n_lesions_per_class):
        for lesion in range(n):
            for k in range(rng.integers(1, 4)):
                rows.append({"image_id": f"I{c}_{lesion}_{k}", "lesion_id": f"L{c}_{lesion}",
                             "dx": CLASSES[c]})
    return pd.DataFrame(rows)


def test_split_no_lesion_in_two_splits_every_class_everywhere_and_fractions():
    table = _lesion_table()
    split = lesion_grouped_split(table, (0.7, 0.15, 0.15), seed=3)
    assert list(split.columns) == ["image_id", "lesion_id", "dx", "split"]
    assert len(split) == len(table) and split["split"].notna().all()
    assert lesions_in_several_splits(split) == []
    for dx in CLASSES:
        assert set(split.loc[split["dx"] == dx, "split"]) == {"train", "val", "test"}, dx
    frac = split["split"].value_counts(normalize=True)
    assert abs(frac["train"] - 0.7) < 0.05 and abs(frac["test"] - 0.15) < 0.05


def test_split_is_seeded():
    table = _lesion_table()
    a = lesion_grouped_split(table, seed=1)
    assert a.equals(lesion_grouped_split(table, seed=1))
    assert not a["split"].equals(lesion_grouped_split(table, seed=2)["split"])


def test_split_with_too_few_lesions_keeps_lesions_whole():
    table = _lesion_table((2, 1, 5, 5, 5, 5, 5))
    split = lesion_grouped_split(table, seed=0)
    assert lesions_in_several_splits(split) == []
    assert split["split"].notna().all()


def test_paper_protocol_is_balanced_and_leaks():
    table = _lesion_table()
    split = paper_split(table, per_class=50, seed=0)
    assert (split["dx"].value_counts() == 50).all()
    assert split["copy"].max() > 0
    # the leak this protocol exists to measure: lesions in train and test
    assert len(lesions_in_several_splits(split)) > 0


def test_split_roundtrip_and_bad_split_file(tmp_path):
    split = make_split(_lesion_table(), "lesion_grouped")
    write_split(split, tmp_path / "s.csv")
    again = read_split(tmp_path / "s.csv")
    assert again[list(split.columns)].equals(split)
    (tmp_path / "bad.csv").write_text("image_id,dx\nx,mel\n")
    with pytest.raises(DataError, match="missing column.*lesion_id"):
        read_split(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="not found"):
        read_split(tmp_path / "none.csv")


# --------------------------------------------------------------------------- pipeline


def test_decode_split_arrays_and_cache(ham_dir, tmp_path):
    ds = read_ham10000(ham_dir)
    split = lesion_grouped_split(ds.table, seed=0)
    arrays, errors = decode_split(ds, split, 32, cache_dir=tmp_path / "cache")
    assert errors == []
    assert sum(len(a) for a in arrays.values()) == len(ds)
    for name, a in arrays.items():
        assert a.images.shape[1:] == (32, 32, 3) and a.images.dtype == np.uint8
        expected = split.loc[split["split"] == name, "dx"].map(CLASSES.index).to_numpy()
        np.testing.assert_array_equal(a.labels, expected)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    again, _ = decode_split(ds, split, 32, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again["train"].images, arrays["train"].images)


def test_decode_split_reports_corrupt_images(ham_dir):
    victim = sorted(ham_dir.rglob("*.jpg"))[0]
    victim.write_bytes(b"garbage")
    ds = read_ham10000(ham_dir)
    arrays, errors = decode_split(ds, lesion_grouped_split(ds.table), 16)
    assert len(errors) == 1 and victim.name in errors[0]
    assert sum(len(a) for a in arrays.values()) == len(ds) - 1


def test_tf_dataset_shapes_dtypes_and_range():
    images = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(10) % NUM_CLASSES
    ds = make_tf_dataset(images, labels, 4)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype.name == "float32" and y.dtype.name == "int32"
    np.testing.assert_array_equal(x.numpy(), images[:4].astype(np.float32))
    np.testing.assert_array_equal(y.numpy(), labels[:4])


def test_augmentation_only_on_training_split():
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    labels = np.zeros(8, int)
    aug = AugmentConfig()
    with pytest.raises(ValueError, match="training split only"):
        make_tf_dataset(images, labels, 8, training=False, augment=aug)
    with pytest.raises(ValueError, match="training split only"):
        make_tf_dataset(images, labels, 8, training=False, oversample=True)
    x, _ = next(iter(make_tf_dataset(images, labels, 8, training=True, augment=aug, seed=1)))
    x = x.numpy()
    assert x.min() >= 0 and x.max() <= 255
    assert not np.allclose(np.sort(x.reshape(-1)), np.sort(images.astype(np.float32).reshape(-1)))


def test_oversampling_balances_training_batches():
    labels = np.array([0] * 90 + [1] * 10)
    images = np.zeros((100, 8, 8, 3), np.uint8)
    ds = make_tf_dataset(images, labels, 100, training=True, oversample=True, seed=0)
    y = np.concatenate([b[1].numpy() for b in ds])
    assert len(y) == 100 and 30 < (y == 1).sum() < 70


def test_targets_make_dict_labels():
    images = np.zeros((4, 8, 8, 3), np.uint8)
    _, y = next(iter(make_tf_dataset(images, np.arange(4), 4, targets=["logits", "cnn_exit"])))
    assert set(y) == {"logits", "cnn_exit"}


def test_class_weights_balance_the_training_labels():
    w = class_weights(np.array([0] * 6 + [1] * 2))
    assert w[0] * 6 == pytest.approx(w[1] * 2) and w[3] == 0.0


def test_logit_adjustment_is_tau_log_prior_of_the_training_labels():
    labels = np.array([0] * 6 + [1] * 3 + [5])
    adjust = logit_adjustment(labels, tau=1.0)
    assert adjust.shape == (7,) and adjust.dtype == np.float32
    # Present classes: log(count / total) with every absent class counted as one image.
    total = 6 + 3 + 1 + 4
    np.testing.assert_allclose(adjust[[0, 1, 5]], np.log(np.array([6, 3, 1]) / total), rtol=1e-6)
    np.testing.assert_allclose(adjust[[2, 3, 4, 6]], np.log(1 / total), rtol=1e-6)
    np.testing.assert_allclose(logit_adjustment(labels, tau=0.5), 0.5 * adjust, rtol=1e-6)
    assert not np.any(logit_adjustment(labels, tau=0.0))


# --------------------------------------------------------------------------- rules, selection


def test_bad_split_values_are_config_errors_naming_the_key(ham_dir):
    from kdskin.errors import ConfigError

    table = _lesion_table()
    for fractions in ([0.5, 0.5, 0.5], [0.8, 0.2], [1.2, -0.1, -0.1]):
        with pytest.raises(ConfigError, match=r"data\.split must be three"):
            make_split(table, "lesion_grouped", fractions)
    with pytest.raises(ConfigError, match=r"data\.protocol must be one of lesion_grouped, paper"):
        make_split(table, "random")
    with pytest.raises(ConfigError, match=r"data\.format must be one of ham10000, isic2018"):
        read_dataset(ham_dir, "csv")
    with pytest.raises(ConfigError, match=r"data\.class_weight_power"):
        class_weights(np.array([0, 1]), power=-1)
    with pytest.raises(ConfigError, match=r"data\.logit_adjust_tau"):
        logit_adjustment(np.array([0, 1]), tau=-1)


def test_collect_images_walks_folders_in_order_and_names_missing_paths(tmp_path):
    from kdskin.data.images import collect_images

    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.png", "d/sub/a.JPG", "single.jpg"):
        Image.new("RGB", (4, 4)).save(tmp_path / name, "PNG" if name.endswith("png") else "JPEG")
    (tmp_path / "d" / "notes.txt").write_text("x")
    found = collect_images([tmp_path / "d", tmp_path / "single.jpg"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "d/b.png", "d/sub/a.JPG", "single.jpg"]
    with pytest.raises(DataError, match="missing.png: no such image file or folder"):
        collect_images([tmp_path / "missing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no image files"):
        collect_images([tmp_path / "empty"])


def test_pick_stratified_covers_every_class_first_and_is_seeded():
    from kdskin.data.select import pick_images_per_class, pick_stratified

    labels = np.array([0] * 10 + [1] * 3 + [2] * 1 + [5] * 6)
    idx = pick_stratified(labels, 8, NUM_CLASSES, seed=1)
    assert len(idx) == len(set(idx.tolist())) <= 8
    assert labels[idx[:4]].tolist() == [0, 1, 2, 5]  # one of each class present, in class order
    np.testing.assert_array_equal(idx, pick_stratified(labels, 8, NUM_CLASSES, seed=1))
    picked = pick_images_per_class(labels, per_class=2, seed=0)
    assert np.bincount(labels[picked]).tolist() == [2, 2, 1, 0, 0, 2]
    with pytest.raises(DataError, match="per_class"):
        pick_images_per_class(labels, per_class=0)


def test_decoding_progress_never_writes_to_stdout(tmp_path, capsys):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (9, 9), (i, 0, 0)).save(paths[-1])
    images, kept, errors = load_images(paths, 8, progress=True)
    assert images.shape == (3, 8, 8, 3) and kept == [0, 1, 2] and errors == []
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "\x1b[" not in captured.err  # stderr is not a terminal here: no bar, no ANSI codes


@pytest.mark.parametrize("balance", ["class_weight", "oversample", "logit_adjusted"])
def test_prepare_data_derives_the_balance_from_the_training_split(ham_dir, tmp_path, balance):
    from kdskin.config import load_config
    from kdskin.pipeline.data import prepare_data
    from kdskin.rundir import RunDir

    cfg = load_config(None, [f"data.balance={balance}", "data.image_size=32"])
    data = prepare_data(cfg, RunDir(tmp_path / "run"), str(ham_dir))
    assert (data.class_weight is not None) == (balance == "class_weight")
    assert data.oversample == (balance == "oversample")
    if balance == "logit_adjusted":
        np.testing.assert_allclose(data.logit_adjustment,
                                   logit_adjustment(data.train.labels, cfg.data.logit_adjust_tau))
    else:
        assert data.logit_adjustment is None
