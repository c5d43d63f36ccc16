from pathlib import Path

import pytest

from kdskin.config import Config, load_config
from kdskin.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def test_defaults_are_the_quickstart_config():
    assert load_config(CONFIGS / "quickstart.yaml").to_dict() == Config().to_dict()


@pytest.mark.parametrize("name", ["quickstart", "cpu", "paper", "cpu_ablation"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.name == name.removesuffix("_ablation")


@pytest.mark.parametrize("name", ["cpu", "cpu_ablation", "cpu_pretrained", "paper"])
def test_written_configs_set_no_key_that_does_nothing(name):
    """A hand-written config declares what it changes: no teacher key that its teacher does not
    read (kdskin.models.specs.unused_teacher_keys). quickstart.yaml is a dump of every default."""
    import yaml

    from kdskin.models.specs import unused_teacher_keys

    cfg = load_config(CONFIGS / f"{name}.yaml")
    written = (yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()) or {}).get("teacher", {})
    unused = set(unused_teacher_keys(cfg.teacher.conv_branch, cfg.teacher.vit_depth))
    assert unused & set(written) == set()


@pytest.mark.parametrize("folder", ["", "previous/", "previous/full/"])
def test_cpu_ablation_config_is_the_cpu_config_but_for_what_it_trains(folder):
    """`kdskin report runs/cpu runs/cpu_ablation` puts both runs in one table only when every
    experiment setting is equal (the ones kdskin.report.NOT_EXPERIMENT lists may differ); the
    same for the previous recipes' pairs (configs/previous/, configs/previous/full/)."""
    from kdskin.report import settings_of

    def settings(name: str) -> dict:
        return settings_of(load_config(CONFIGS / f"{folder}{name}.yaml").to_dict())

    cpu, ablation = settings("cpu"), settings("cpu_ablation")
    assert {k for k in cpu | ablation if cpu.get(k) != ablation.get(k)} == set()
    assert load_config(CONFIGS / f"{folder}cpu_ablation.yaml").reference.enabled


def test_the_shipped_cpu_recipe_is_not_the_previous_one():
    """configs/previous/ keeps the recipe the saved runs were made with; configs/cpu.yaml moved
    on (all of HAM10000 from an ImageNet start, colour constancy, the shift augmentation)."""
    cpu, previous = (load_config(CONFIGS / f"{f}cpu.yaml") for f in ("", "previous/"))
    assert (cpu.student.weights, previous.student.weights) == ("imagenet", "none")
    assert cpu.data.colour_constancy == "shades_of_grey" and cpu.augment.shift.enabled
    assert cpu.distill.teacher_view == "unshifted" and cpu.name == previous.name == "cpu"
    assert (cpu.trust.melanoma_offset, previous.trust.melanoma_offset) == ("balanced", "none")


def test_the_previous_full_data_recipe_is_the_one_its_saved_runs_were_made_with():
    """configs/previous/full/ keeps the full-data recipe of the runs saved as
    docs/results/cpu_full*.json (64 px ConvMixer teacher from scratch); configs/cpu.yaml's
    teacher moved to EfficientNet-Lite1 from ImageNet at 128 px, its exits distilled."""
    from kdskin.report import drop_unused, experiment_settings, settings_of
    from kdskin.rundir import load_metrics

    previous = load_config(CONFIGS / "previous/full/cpu.yaml")
    for name in ("cpu_full", "cpu_full_seed43"):
        saved = load_metrics(RESULTS / f"{name}.json")
        assert experiment_settings(saved) == drop_unused(settings_of(previous.to_dict())), name
    cpu = load_config(CONFIGS / "cpu.yaml")
    assert (previous.teacher.conv_branch, previous.teacher_image_size()) == ("convmixer", 64)
    assert (cpu.teacher.conv_branch, cpu.teacher.conv_variant, cpu.teacher.conv_weights,
            cpu.teacher_image_size()) == ("efficientnet_lite", "B1", "imagenet", 128)
    assert set(cpu.distill.exit_map.values()) <= {"conv_exit_1", "conv_exit_last"}


def test_paper_config_holds_the_papers_settings():
    cfg = load_config(CONFIGS / "paper.yaml")
    assert cfg.data.image_size == 64
    t = cfg.teacher
    assert (t.patch_size, t.projection_dim, t.num_heads, t.vit_depth) == (4, 256, 8, 2)
    assert t.mlp_units == [512, 256] and t.dropout == 0.1
    assert (t.head_units, t.head_dropout) == (512, 0.5)
    s = cfg.student
    assert s.cnn_filters == [32, 64] and s.l2 == 0.01 and (s.head_units, s.head_dropout) == (256,
                                                                                             0.5)
    d = cfg.distill
    assert (d.alpha, d.beta, d.gamma, d.temperature) == (0.3, 0.3, 0.4, 10.0)
    assert cfg.train.batch_size == 32 and cfg.student.learning_rate == 1e-3


def test_set_overrides_nested_values_and_widens_ints():
    cfg = load_config(None, ["train.batch_size=8", "distill.temperature=4",
                             "distill.stages=[baseline, multi]", "data.dir=/tmp/x"])
    assert cfg.train.batch_size == 8
    assert cfg.distill.temperature == 4.0 and isinstance(cfg.distill.temperature, float)
    assert cfg.distill.stages == ["baseline", "multi"]
    assert cfg.data.dir == "/tmp/x"


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("teacher:\n  patch_sise: 4\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*teacher\.patch_sise"):
        load_config(path)


def test_wrong_type_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: many\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*train\.batch_size.*int"):
        load_config(path)


def test_bool_is_not_an_int(tmp_path):
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(None, ["train.batch_size=true"])


def test_wrong_type_in_override_names_the_override():
    with pytest.raises(ConfigError, match=r"--set teacher\.epochs=abc.*teacher\.epochs"):
        load_config(None, ["teacher.epochs=abc"])


def test_unknown_key_in_override():
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        load_config(None, ["nope.x=1"])


def test_bad_choice_and_bad_split():
    with pytest.raises(ConfigError, match="teacher.conv_branch"):
        load_config(None, ["teacher.conv_branch=resnet"])
    with pytest.raises(ConfigError, match="data.split"):
        load_config(None, ["data.split=[0.5, 0.5, 0.5]"])
    with pytest.raises(ConfigError, match="distill.stages"):
        load_config(None, ["distill.stages=[baseline, bogus]"])


def test_patch_must_divide_image_size():
    with pytest.raises(ConfigError, match="patch_size"):
        load_config(None, ["data.image_size=30", "teacher.patch_size=4"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml.*not valid YAML"):
        load_config(bad)


def test_override_without_equals():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["train.batch_size"])


def test_saved_config_reloads_equal(tmp_path):
    cfg = load_config(None, ["train.batch_size=4", "distill.exit_map={cnn_exit: conv_exit_1}"])
    cfg.save(tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again.to_dict() == cfg.to_dict()
    assert again.distill.exit_map == {"cnn_exit": "conv_exit_1"}


def test_float_int8_head_needs_float_output():
    with pytest.raises(ConfigError, match="export.int8_head.*int8_output=uint8"):
        load_config(None, ["export.int8_output=uint8"])
    cfg = load_config(None, ["export.int8_output=uint8", "export.int8_head=int8"])
    assert (cfg.export.int8_output, cfg.export.int8_head) == ("uint8", "int8")
    assert load_config().export.int8_head == "float" and load_config().export.centre_input


# --------------------------------------------------------------------------- validation once


def test_config_and_data_errors_are_value_errors():
    from kdskin.errors import DataError, KdskinError

    for cls in (ConfigError, DataError):
        assert issubclass(cls, ValueError) and issubclass(cls, KdskinError)
    with pytest.raises(ValueError, match="data.split"):
        load_config(None, ["data.split=[0.5, 0.5]"])


def test_image_size_too_small_for_the_student_fails_at_load_without_keras(tmp_path):
    """The student needs 32 px: 24 passes the data rule (>= 16) but fails at load, naming the
    key, in a process that never imports Keras or TensorFlow."""
    import subprocess
    import sys

    bad = tmp_path / "small.yaml"
    bad.write_text("data:\n  image_size: 24\n")
    code = (
        "import sys\n"
        "from kdskin.config import load_config\n"
        "from kdskin.errors import ConfigError\n"
        f"try:\n    load_config({str(bad)!r})\n"
        "except ConfigError as exc:\n    print(exc)\n"
        "else:\n    print('loaded')\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'pandas') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0].startswith(f"{bad}: data.image_size") and "at least 32" in out[0]
    assert "got 24" in out[0]
    assert out[1] == "[]"


@pytest.mark.parametrize("overrides, match", [
    (["data.image_size=24"], r"data\.image_size .*at least 32"),
    (["data.image_size=12"], r"data\.image_size .*at least 16"),
    (["teacher.mlp_units=[128, 32]"], r"teacher\.mlp_units .*projection_dim"),
    (["teacher.projection_dim=0"], r"teacher\.projection_dim"),
    (["teacher.dropout=1.0"], r"teacher\.dropout"),
    (["student.cnn_filters=[]"], r"student\.cnn_filters"),
    (["student.head_dropout=1.5"], r"student\.head_dropout"),
    (["student.weights=imagenet", "student.efficientnet=B3"],
     r"student\.weights: imagenet weights exist for EfficientNet-Lite B0, B1, B2 only"),
    (["teacher.conv_weights=imagenet"], r"teacher\.conv_weights 'imagenet' needs"),
    (["reference_effnet.enabled=true", "reference_effnet.dropout=1.5"],
     r"reference_effnet\.dropout"),
    (["student.weights=/nonexistent/effnet.h5"], r"student\.weights.*not found"),
    (["student.fusion=none"], r"student\.fusion.*multi_fusion"),
    (["distill.exit_map={cnn_exit: conv_exit_9}"], r"distill\.exit_map.*conv_exit_9"),
    (["distill.exit_map={cnn_feats: conv_exit_last}"], r"distill\.exit_map.*cnn_feats"),
    (["distill.exit_map={}"], r"distill\.exit_map is empty"),
    (["distill.alpha=-0.1"], r"distill\.alpha"),
    (["distill.temperature=0"], r"distill\.temperature"),
    (["explain.methods=[gradcam, shap]"], r"explain\.methods.*shap"),
    (["augment.hue=1.0"], r"augment\.hue"),
    (["data.class_weight_power=3"], r"data\.class_weight_power"),
    (["data.logit_adjust_tau=5"], r"data\.logit_adjust_tau must be in \[0, 4\]"),
    (["student.effnet_stem_stride=3"], r"student\.effnet_stem_stride must be 1 or 2"),
    (["student.cnn_convs=4"], r"student\.cnn_convs"),
    (["data.image_size=64", "teacher.image_size=48"],
     r"teacher\.image_size \(48\) must be at least data\.image_size \(64\)"),
    (["teacher.image_size=96", "data.pipeline=stream"], r"data\.pipeline=stream does not"),
    (["teacher.image_size=98"], r"teacher\.patch_size .* divisor of the teacher's image size"),
])
def test_every_builder_rule_is_checked_at_load(overrides, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("defaults with --set ")


def test_the_teacher_takes_its_own_image_size_or_the_students():
    cfg = load_config(None, ["data.image_size=64"])
    assert cfg.teacher.image_size is None and cfg.teacher_image_size() == 64
    cfg = load_config(None, ["data.image_size=64", "teacher.image_size=96"])
    assert cfg.teacher_image_size() == 96 and cfg.data.image_size == 64


def test_logit_adjusted_balance_loads_with_its_tau():
    cfg = load_config(None, ["data.balance=logit_adjusted", "data.logit_adjust_tau=0.5"])
    assert cfg.data.balance == "logit_adjusted" and cfg.data.logit_adjust_tau == 0.5


def test_rules_that_depend_on_the_stages():
    # no multi stage: the exit map is not used, so it is not checked
    cfg = load_config(None, ["distill.stages=[baseline, single]",
                             "distill.exit_map={cnn_exit: conv_exit_9}"])
    assert cfg.distill.stages == ["baseline", "single"]
    # no fused stage: a student without a fusion head is fine
    assert load_config(None, ["student.fusion=none", "distill.stages=[multi]"]).student.fusion \
        == "none"
    # no student at all: its image-size rule does not apply, the teacher's and baseline's do
    assert load_config(None, ["distill.stages=[]", "data.image_size=24"]).data.image_size == 24


def test_the_builders_and_the_config_share_one_rule():
    """The same function (and so the same message) rejects the size in both places."""
    from kdskin.models.specs import StudentConfig, validate_student

    with pytest.raises(ConfigError) as direct:
        validate_student(StudentConfig(), 24, 7)
    with pytest.raises(ConfigError) as loaded:
        load_config(None, ["data.image_size=24"])
    assert str(loaded.value).endswith(str(direct.value))


def test_allowed_values_are_declared_once_beside_their_code():
    import dataclasses

    from kdskin import config
    from kdskin.data.specs import BALANCE_MODES, FORMATS, PROTOCOLS
    from kdskin.distill import stages
    from kdskin.models import specs

    def choices(cls, name):
        return {f.name: f for f in dataclasses.fields(cls)}[name].metadata["choices"]

    assert choices(config.DataConfig, "format") is FORMATS
    assert choices(config.DataConfig, "protocol") is PROTOCOLS
    assert choices(config.DataConfig, "balance") is BALANCE_MODES
    assert choices(config.StudentConfig, "fusion") is specs.FUSIONS
    assert choices(config.StudentConfig, "efficientnet") is specs.EFFICIENTNETS
    assert choices(config.StudentConfig, "efficientnet_variant") is specs.EFFICIENTNET_VARIANTS
    assert choices(config.TeacherConfig, "conv_branch") is specs.CONV_BRANCHES
    assert config.STAGES is stages.STAGES and stages.FUSED_HEADS is specs.FUSED_HEADS
    assert config.StudentConfig is specs.StudentConfig
    assert load_config().distill.stages == list(stages.STAGES)


def test_a_config_extends_another(tmp_path):
    """``extends:``: the file's settings over its base's, section by section; lists replace;
    the name is the file's own (or its stem), never the base's."""
    (tmp_path / "base.yaml").write_text(
        "name: base\ndata:\n  image_size: 96\n  colour_constancy: shades_of_grey\n"
        "distill:\n  stages: [single, multi_fusion]\ntrain:\n  batch_size: 16\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text(
        "extends: ../base.yaml\ndata:\n  image_size: 64\ndistill:\n  stages: [baseline]\n")
    cfg = load_config(tmp_path / "sub" / "child.yaml")
    assert (cfg.data.image_size, cfg.data.colour_constancy) == (64, "shades_of_grey")
    assert cfg.distill.stages == ["baseline"] and cfg.train.batch_size == 16
    assert cfg.name == "child"
    (tmp_path / "grandchild.yaml").write_text("extends: sub/child.yaml\nname: g\n"
                                              "train:\n  batch_size: 8\n")
    g = load_config(tmp_path / "grandchild.yaml", ["data.image_size=48"])
    assert (g.name, g.train.batch_size, g.data.image_size) == ("g", 8, 48)
    assert g.data.colour_constancy == "shades_of_grey"


@pytest.mark.parametrize("files,message", [
    ({"a.yaml": "extends: missing.yaml\n"}, "missing.yaml: config file not found; fix 'extends:'"),
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "makes a loop"),
    ({"a.yaml": "extends: a.yaml\n"}, "makes a loop"),
    ({"a.yaml": "extends: [b.yaml]\n"}, "must be the path of one YAML file"),
])
def test_a_bad_extends_is_a_one_line_error(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "a.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cpu_ablation_extends_cpu():
    """configs/cpu_ablation.yaml is the few keys that differ from configs/cpu.yaml."""
    import yaml

    raw = yaml.safe_load((CONFIGS / "cpu_ablation.yaml").read_text())
    assert raw["extends"] == "cpu.yaml" and "teacher" not in raw and "student" not in raw
    cpu, ablation = load_config(CONFIGS / "cpu.yaml"), load_config(CONFIGS / "cpu_ablation.yaml")
    assert ablation.teacher == cpu.teacher and ablation.student == cpu.student
    assert ablation.augment == cpu.augment and ablation.data == cpu.data


def _bounded_fields(cls=Config, prefix=""):
    """``(key, Bounds)`` of every field of the configuration declared with bounded_field."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if "bounds" in f.metadata:
            yield key, f.metadata["bounds"]
        elif dataclasses.is_dataclass(hints[f.name]):
            yield from _bounded_fields(hints[f.name], f"{key}.")


def test_every_declared_bound_is_checked_with_a_one_line_error():
    """Each range rule is declared once on its field; the loader checks every one the same
    way: a value just outside is refused naming the key, the range and what it got."""
    fields = dict(_bounded_fields())
    assert {"train.batch_size", "trust.min_melanoma_recall", "export.app_input_factor",
            "teach.folds", "augment.views", "teacher.epochs"} <= set(fields)
    for key, bounds in fields.items():
        below = bounds.low - (0 if bounds.low_open else 1) if bounds.low is not None else None
        above = bounds.high + (0 if bounds.high_open else 1) if bounds.high is not None else None
        for bad in (v for v in (below, above) if v is not None):
            with pytest.raises(ConfigError) as err:
                load_config(None, [f"{key}={bad}"])
            message = str(err.value)
            assert f"'{key}' must be {bounds.describe()}" in message and "\n" not in message
        inside = bounds.low if bounds.low is not None and not bounds.low_open else None
        if inside is not None:
            assert load_config(None, [f"{key}={inside}"]) is not None
        if bounds.nullable:
            assert load_config(None, [f"{key}=null"]) is not None
