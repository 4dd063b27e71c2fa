"""Run configuration: TOML round trip, path resolution, validation messages, overrides, hashing."""
from pathlib import Path

import pytest

from resources import demo_project
from sembridge_engine.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    config_from_dict,
    config_hash,
    load_config,
    save_config,
)
from sembridge_engine.distill.losses import KD_LOSSES
from sembridge_engine.models.backbones import available_backbones


def test_demo_config_resolves_paths_against_its_folder():
    config = load_config(demo_project() / "demo.toml")
    assert Path(config.data.ms_path) == (demo_project() / "ms").resolve()
    assert Path(config.data.rgb_path) == (demo_project() / "rgb").resolve()
    assert config.data.band_preset == "sentinel2_eurosat13"
    assert config.output_dir == ""


def test_round_trip_keeps_every_value(tmp_path):
    config = apply_overrides(load_config(demo_project() / "demo.toml"),
                             ["distill.params.temperature=2.5", "data.class_mapping={ forest = 'Forest' }"])
    path = tmp_path / "config.toml"
    save_config(config, path)
    assert load_config(path) == config
    assert config_hash(load_config(path)) == config_hash(config)


def test_relative_paths_follow_the_config_file(tmp_path):
    (tmp_path / "project").mkdir()
    path = tmp_path / "project" / "run.toml"
    path.write_text('[data]\nms_path = "archive/ms"\nrgb_path = "/abs/rgb"\n[student]\nteacher_from = "../old"\n')
    config = load_config(path)
    assert config.data.ms_path == str(tmp_path / "project" / "archive" / "ms")
    assert config.data.rgb_path == "/abs/rgb"
    assert config.student.teacher_from == str(tmp_path / "old")


def test_unknown_loss_lists_the_registry():
    with pytest.raises(ConfigError) as error:
        config_from_dict({"distill": {"loss": "magic"}})
    assert error.value.key == "distill.loss"
    for name in KD_LOSSES:
        assert name in str(error.value)


def test_unknown_arch_lists_available_backbones():
    with pytest.raises(ConfigError) as error:
        config_from_dict({"student": {"arch": "vgg99"}})
    assert error.value.key == "student.arch"
    for name in available_backbones():
        assert name in str(error.value)


@pytest.mark.parametrize("data, key, fragment", [
    ({"teacher": {"epoch": 3}}, "teacher.epoch", "epochs"),
    ({"train": {"optimizer": "lbfgs"}}, "train.optimizer", "adam"),
    ({"data": {"band_preset": "landsat"}}, "data.band_preset", "sentinel2_eurosat13"),
    ({"data": {"rgb_split": [0.5, 0.5]}}, "data.rgb_split", "three"),
    ({"distill": {"lambda1": 1.5}}, "distill.lambda1", "between 0 and 1"),
    ({"student": {"epochs": "many"}}, "student.epochs", "integer"),
    ({"distill": {"loss": "kd", "params": {"tau": 4}}}, "distill.params.tau", "temperature"),
    ({"distill": {"loss": "logits", "pssm": True}}, "distill.pssm", "kd"),
])
def test_validation_names_key_and_allowed_values(data, key, fragment):
    with pytest.raises(ConfigError) as error:
        config_from_dict(data)
    assert error.value.key == key
    assert fragment in str(error.value)


def test_overrides_coerce_types_and_validate():
    config = apply_overrides(RunConfig(), [
        "student.epochs=3", "distill.lambda1=0.5", "distill.dynm=false", "data.classes=Forest,River",
        "teacher.lr=1e-2", "distill.params.temperature=2", "name=123",
    ])
    assert config.student.epochs == 3 and isinstance(config.student.epochs, int)
    assert config.distill.lambda1 == 0.5
    assert config.distill.dynm is False
    assert config.data.classes == ["Forest", "River"]
    assert config.teacher.lr == pytest.approx(0.01)
    assert config.distill.params == {"temperature": 2}
    assert config.name == "123"
    with pytest.raises(ConfigError, match="student.epochs"):
        apply_overrides(RunConfig(), ["student.epochs=abc"])
    with pytest.raises(ConfigError, match="allowed keys"):
        apply_overrides(RunConfig(), ["student.epoch=3"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(RunConfig(), ["student.epochs"])


def test_hash_changes_with_any_value():
    base = RunConfig()
    assert config_hash(base) == config_hash(RunConfig())
    assert config_hash(base) != config_hash(apply_overrides(base, ["train.seed=1"]))
