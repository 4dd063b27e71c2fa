"""The training recipe's settings (augmentation, precise BatchNorm, model selection, hub-aware
matching, the alignment terms' scale, pretrained weights) set through the wizard's widgets land in the RunConfig and its TOML."""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from app.wizard.pretrained import IMAGENET, WEIGHTS_FILE


def open_wizard(qtbot, window):
    wizard = window.train_page.wizard
    with qtbot.waitSignal(wizard.page_data.inspected, timeout=30000):
        window.show_page("Train")
    return wizard


def choose(choice, kind: str, path: Path | None = None) -> None:
    choice.combo.setCurrentIndex(choice.combo.findData(kind))
    if path is not None:
        choice.file_field.set_path(path)


def test_recipe_settings_round_trip_through_the_wizard(qtbot, window, tmp_path, monkeypatch):
    from sembridge_engine.config import load_config
    from sembridge_engine.models.backbones import imagenet_weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty torchvision cache
    weights = tmp_path / "student_weights.pth"
    torch.save(torchvision.models.shufflenet_v2_x0_5().state_dict(), weights)

    wizard = open_wizard(qtbot, window)
    wizard.next()
    wizard.next()
    models = wizard.page_models
    assert wizard.currentPage() is models
    assert [models.pretrained[stage].value() for stage in ("teacher", "matcher", "student")] == ["", "", ""]
    assert not models.pretrained["student"].file_field.isVisibleTo(models)
    models.teacher_combo.setCurrentText("mobilenet_v2")
    choose(models.pretrained["teacher"], IMAGENET)
    missing = imagenet_weights_path("mobilenet_v2")
    assert models.pretrained["teacher"].warning.isVisibleTo(models)
    assert "not in the torchvision cache" in models.pretrained["teacher"].warning.text()
    assert str(missing) in models.pretrained["teacher"].warning.text()
    choose(models.pretrained["student"], WEIGHTS_FILE)
    assert models.pretrained["student"].file_field.isVisibleTo(models)
    assert "Choose a weights file" in models.pretrained["student"].warning.text()
    models.pretrained["student"].file_field.set_path(tmp_path / "no-such.pth")
    assert not wizard.next(), "missing ImageNet weights and a missing file keep the user on the page"
    assert "not in the torchvision cache" in models.error_label.text()

    missing.parent.mkdir(parents=True)
    torch.save(torchvision.models.mobilenet_v2().state_dict(), missing)
    models.teacher_combo.setCurrentText("shufflenet_v2_x0_5")
    assert "shufflenet" in models.pretrained["teacher"].warning.text(), "the check follows the chosen network"
    models.teacher_combo.setCurrentText("mobilenet_v2")
    assert not models.pretrained["teacher"].warning.isVisibleTo(models)
    models.pretrained["student"].file_field.set_path(weights)
    assert not models.pretrained["student"].warning.isVisibleTo(models)
    assert wizard.next()

    distill = wizard.page_distill
    assert not distill.csls_neighbours.isEnabled(), "CSLS neighbours matter only with csls"
    distill.similarity_combo.setCurrentText("csls")
    assert distill.csls_neighbours.isEnabled()
    distill.csls_neighbours.setValue(7)
    distill.teacher_capacity.setValue(1.5)
    assert distill.ot_scale_combo.currentText() == "paper"
    distill.ot_scale_combo.setCurrentText("trace")
    assert wizard.next()

    training = wizard.page_training
    assert training.dihedral_check.isChecked() and training.precise_bn_check.isChecked()
    training.dihedral_check.setChecked(False)
    training.crop_min.setValue(0.75)
    training.colour_jitter.setValue(0.1)
    training.precise_bn_check.setChecked(False)
    training.selection_window.setValue(5)
    training.advanced.checks["train.sync_batchnorm"].setChecked(True)
    training.advanced.spins["train.label_smoothing"].setValue(0.1)
    training.output_field.set_path(tmp_path / "runs")
    assert wizard.next()
    assert wizard.currentPage() is wizard.page_review and wizard.page_review.valid

    for config in (wizard.config, load_config(wizard.save_config(tmp_path / "recipe.toml"))):
        assert (config.augment.dihedral, config.augment.crop_min, config.augment.colour_jitter) == (False, 0.75, 0.1)
        assert (config.train.precise_bn, config.train.selection_window, config.train.sync_batchnorm) == (False, 5, True)
        assert config.train.label_smoothing == 0.1
        assert (config.distill.ssm_similarity, config.distill.csls_neighbours) == ("csls", 7)
        assert config.distill.teacher_capacity == 1.5 and config.distill.ot_scale == "trace"
        assert (config.teacher.arch, config.teacher.pretrained) == ("mobilenet_v2", "imagenet")
        assert config.matcher.pretrained == ""
        assert config.student.pretrained == str(weights)
    assert "[augment]" in wizard.page_review.toml_view.toPlainText()


def test_a_reused_teacher_keeps_its_own_weights(qtbot, window, trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    wizard = open_wizard(qtbot, window)
    wizard.next()
    wizard.next()
    models = wizard.page_models
    choose(models.pretrained["teacher"], IMAGENET)
    assert models.pretrained["teacher"].problem()
    models.reuse_check.setChecked(True)
    models.reuse_field.set_path(trained_run)
    assert not models.pretrained["teacher"].isEnabled()
    assert not models.pretrained["teacher"].warning.isVisibleTo(models)
    assert wizard.next(), "weights of a stage that is not trained again do not block the run"
    assert wizard.config.teacher.pretrained == ""
