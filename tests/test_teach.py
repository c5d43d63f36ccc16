"""The teacher directory: ``kdskin teach`` (kdskin.pipeline.teach), its store and its reuse."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from kdskin.config import AugmentConfig, Config, load_config
from kdskin.data.views import draw_views, flip_views, view_settings
from kdskin.distill.targets import ensemble_logits, mean_probability_logits
from kdskin.errors import ConfigError, KdskinError
from kdskin.teacherdir import (
    TeacherDir,
    TeacherInfo,
    check_compatible,
    load_arrays,
    load_store,
    save_arrays,
)


def _tiny_model(size: int = 16):
    import keras

    from kdskin.constants import INPUT_NAME

    x = keras.Input((size, size, 3), name=INPUT_NAME)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x / 255.0))
    return keras.Model(x, {"logits": keras.layers.Dense(7, name="logits")(h),
                           "conv_exit_1": keras.layers.Dense(7, name="conv_exit_1")(h)})


@pytest.mark.slow
def test_stored_outputs_are_the_models_outputs_on_each_view():
    from kdskin.data.views import apply_views
    from kdskin.pipeline.teach import stored_outputs

    model = _tiny_model()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    views = draw_views(10, 3, AugmentConfig(), seed=1)
    got = stored_outputs(model, images, views, "none", batch=4)
    assert set(got) == {"logits", "conv_exit_1"} and got["logits"].shape == (10, 3, 7)
    direct = model(apply_views(images, views[:, 2]), training=False)
    np.testing.assert_allclose(got["logits"][:, 2], np.asarray(direct["logits"]), atol=1e-4)
    tta = stored_outputs(model, images, views, "flip", batch=4)
    mirrored = stored_outputs(model, images, flip_views(views), "none", batch=4)
    np.testing.assert_allclose(
        tta["logits"], mean_probability_logits([got["logits"], mirrored["logits"]]), atol=1e-4)


def _tdir(tmp_path: Path, ids: list[str], k: int = 2) -> tuple[TeacherDir, TeacherInfo]:
    tdir = TeacherDir(tmp_path / "t")
    views = draw_views(len(ids), k, AugmentConfig(), seed=0)
    save_arrays(tdir.views_file, image_ids=np.array(ids), views=views,
                folds=np.zeros(len(ids), np.int64))
    rng = np.random.default_rng(0)
    for member in ("a", "b"):
        save_arrays(tdir.member_targets(member),
                    logits=rng.normal(size=(len(ids), k, 7)).astype(np.float32))
    info = TeacherInfo(split_digest="abc", image_size=32, members={"a": {}, "b": {}},
                       views={"k": k, "seed": 0, "settings": view_settings(AugmentConfig())},
                       store={"outputs": ["logits"]}, complete=True)
    tdir.save_info(info)
    return tdir, info


def test_load_store_follows_the_runs_order_and_averages_the_members(tmp_path):
    ids = [f"ISIC_{i}" for i in range(6)]
    tdir, info = _tdir(tmp_path, ids)
    order = ["ISIC_4", "ISIC_0", "ISIC_5"]
    views, targets = load_store(tdir, info, order, ["logits"], temperature=4.0)
    every = load_arrays(tdir.views_file)["views"]
    np.testing.assert_array_equal(views, every[[4, 0, 5]])
    members = [load_arrays(tdir.member_targets(m))["logits"][[4, 0, 5]] for m in ("a", "b")]
    np.testing.assert_allclose(targets["logits"], ensemble_logits(members, 4.0), atol=1e-5)
    # softened at T, the stored target is the mean of the members' softened probabilities
    soft = np.exp(targets["logits"] / 4.0)
    soft /= soft.sum(-1, keepdims=True)
    mean = np.mean([np.exp(m / 4.0) / np.exp(m / 4.0).sum(-1, keepdims=True) for m in members], 0)
    np.testing.assert_allclose(soft, mean, atol=1e-5)
    with pytest.raises(KdskinError, match="no views for 1 training image"):
        load_store(tdir, info, ["ISIC_9"], ["logits"], 4.0)


@pytest.mark.parametrize("change, message", [
    ({"split_digest": "zzz"}, "another split"),
    ({"views": 3}, "stores 2 views"),
    ({"teacher_size": 64}, "takes 32px images"),
    ({"exit_names": ["conv_exit_2"]}, "asks for conv_exit_2"),
])
def test_a_teacher_dir_for_another_run_is_refused(tmp_path, change, message):
    tdir, info = _tdir(tmp_path, ["a", "b"])
    args = {"split_digest": "abc", "views": 2, "view_seed": 0,
            "view_settings": view_settings(AugmentConfig()), "teacher_size": None,
            "exit_names": ["logits"], **change}
    check_compatible(tdir, info, "abc", 2, 0, view_settings(AugmentConfig()), 32, ["logits"])
    with pytest.raises(KdskinError, match=message) as err:
        check_compatible(tdir, info, **args)
    assert "\n" not in str(err.value)


def test_an_unfinished_or_foreign_directory_is_refused(tmp_path):
    with pytest.raises(KdskinError, match="not a teacher directory"):
        TeacherDir(tmp_path).require_complete()
    tdir, info = _tdir(tmp_path, ["a"])
    info.complete = False
    tdir.save_info(info)
    with pytest.raises(KdskinError, match="unfinished"):
        tdir.require_complete()


def test_teach_config_members_and_adopt():
    cfg = load_config(None, ["teach.members=[{name: big, image_size: 64}, {conv_depth: 1}]"])
    members = cfg.teacher_members()
    assert [n for n, _ in members] == ["big", "member2"]
    assert cfg.member_image_size(members[0][1]) == 64 and members[1][1].conv_depth == 1
    assert members[1][1].vit_depth == cfg.teacher.vit_depth  # the rest from the teacher section
    assert Config().teacher_members()[0][0] == "teacher"
    with pytest.raises(ConfigError, match="not members"):
        load_config(None, ["teach.adopt={other: x.keras}"])
    with pytest.raises(ConfigError, match="names must differ"):
        load_config(None, ["teach.members=[{name: a}, {name: a}]"])
    with pytest.raises(ConfigError, match="at least data.image_size"):
        load_config(None, ["teach.members=[{image_size: 32}]"])


def test_teach_needs_views(tmp_path):
    from kdskin.pipeline.teach import make_teacher

    with pytest.raises(KdskinError, match="augment.views"):
        make_teacher(Config(), tmp_path / "t")


@pytest.mark.slow
def test_teach_resumes_and_a_run_replays_its_stored_targets(tmp_path):
    """A tiny teacher directory (two members, flip TTA), a resumed build that retrains
    nothing, a run that distils from its store, and a run with other views refused."""
    from kdskin.pipeline.run import run_pipeline
    from kdskin.pipeline.teach import make_teacher

    sets = ["augment.views=2", "teach.tta=flip", "data.synth.n_images=400",
            "teach.members=[{name: a}, {name: b, conv_depth: 1}]"]
    root = make_teacher(load_config(None, sets), tmp_path / "t")
    tdir = TeacherDir(root)
    info = tdir.require_complete()
    assert list(info.members) == ["a", "b"] and info.store["views"] == 2
    n = len(load_arrays(tdir.views_file)["image_ids"])
    for member in ("a", "b"):
        stored = load_arrays(tdir.member_targets(member))
        assert stored["logits"].shape == (n, 2, 7) and np.isfinite(stored["logits"]).all()
    assert {"val", "test", "train_seen"} <= set(info.ensemble)
    assert "ensemble (teacher.keras)" in tdir.card.read_text()

    # a build stopped after its models: the second call stores and finishes, retraining nothing
    stamp = tdir.model("a").stat().st_mtime_ns
    info.complete = False
    info.members["b"].pop("store")
    tdir.save_info(info)
    tdir.ensemble.unlink()
    make_teacher(load_config(None, sets), root)
    assert tdir.model("a").stat().st_mtime_ns == stamp and tdir.require_complete().complete

    run_sets = ["augment.views=2", "distill.stages=[multi_fusion]", "student.epochs=1",
                "export.enabled=false", "bench.enabled=false", "explain.enabled=false"]
    out = run_pipeline(load_config(None, run_sets), data_dir=str(root / "data"),
                       out=str(tmp_path / "run"), teacher=str(root))
    from kdskin.rundir import RunDir

    metrics = RunDir(out).load_metrics()
    assert metrics.teacher_settings["teacher_dir"] == str(root)
    assert metrics.split_digest == info.split_digest
    assert "student_multi_fusion" in metrics.models
    with pytest.raises(KdskinError, match="stores 2 views"):
        run_pipeline(load_config(None, [*run_sets[1:], "augment.views=3"]),
                     data_dir=str(root / "data"), out=str(tmp_path / "other"), teacher=str(root))
    shutil.rmtree(tmp_path / "other", ignore_errors=True)


@pytest.mark.slow
def test_a_run_with_views_makes_its_teacher_directory_inline(tmp_path):
    """augment.views > 0 and no --teacher: the run makes RUN/teacher (the default hybrid
    teacher: an EfficientNet-Lite from scratch alone stays at chance on these 280 images on some
    machines, and the gate then refuses it) and distils from its store."""
    from kdskin.pipeline.run import run_pipeline
    from kdskin.rundir import RunDir

    sets = ["augment.views=2", "data.synth.n_images=400", "distill.stages=[multi_fusion]",
            "teacher.conv_depth=2",
            "distill.exit_map={cnn_exit: logits, effnet_exit: conv_exit_last}",
            "student.epochs=1", "export.enabled=false", "bench.enabled=false",
            "explain.enabled=false"]
    out = run_pipeline(load_config(None, sets), out=str(tmp_path / "run"))
    tdir = TeacherDir(Path(out) / "teacher")
    info = tdir.require_complete()
    assert "logits" in info.outputs() and any(o.startswith("conv_exit_") for o in info.outputs())
    metrics = RunDir(out).load_metrics()
    assert metrics.teacher_settings["teacher_dir"] == str(tdir.root)
    assert "teach" in metrics.stage_seconds and "student_multi_fusion" in metrics.models
