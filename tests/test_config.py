from pathlib import Path

import pytest

from kdskin.config import Config, load_config
from kdskin.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_the_quickstart_config():
    assert load_config(CONFIGS / "quickstart.yaml").to_dict() == Config().to_dict()


@pytest.mark.parametrize("name", ["quickstart", "cpu", "paper"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.name == name


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
