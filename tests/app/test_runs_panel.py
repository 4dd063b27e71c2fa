"""Runs & comparison: runs read from their folders, curves overlaid, metrics tabulated."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import rasterio

from app.runs import RunsPanel, latest_bundle
from resources import demo_project
from sembridge_engine.training.rundir import list_runs
from tests.app.conftest import TINY_OVERRIDES


def test_runs_are_listed_and_compared(qtbot, settings, trained_run, tmp_path):
    output = tmp_path / "runs"
    output.mkdir()
    first = shutil.copytree(trained_run, output / "first")
    second = shutil.copytree(trained_run, output / "second")
    settings.output_dir = str(output)
    panel = RunsPanel(settings)
    qtbot.addWidget(panel)
    panel.refresh()
    assert {run.name for run in panel.runs} == {"first", "second"}
    assert all(run.status == "finished" and run.has_bundle for run in panel.runs)
    assert latest_bundle(output).name == "model.sembridge"

    panel.select_runs([first, second])
    assert len(panel.selected_runs()) == 2
    assert panel.metric_combo.currentText() == "val_oa"
    curves = panel.compare_plot.getPlotItem().listDataItems()
    assert len(curves) == 2 and all(len(curve.getData()[0]) >= 1 for curve in curves)
    assert panel.compare_table.columnCount() == 2
    fields = [panel.compare_table.verticalHeaderItem(i).text() for i in range(panel.compare_table.rowCount())]
    assert "test_oa" in fields and "test_macro_f1" in fields
    oa_row = fields.index("test_oa")
    assert all(0.0 <= float(panel.compare_table.item(oa_row, column).text()) <= 1.0 for column in range(2))
    assert not panel.resume_button.isEnabled()

    panel.select_runs([first])
    assert panel.bundle_button.isEnabled()
    with qtbot.waitSignal(panel.useBundleRequested) as blocker:
        panel.bundle_button.click()
    assert blocker.args == [str(first / "model.sembridge")]
    assert len(list_runs(output)) == 2


def test_a_run_is_exported_with_or_without_its_qgis_model(qtbot, settings, trained_run, tmp_path):
    from sembridge_engine.bundle import load_bundle

    settings.output_dir = str(trained_run.parent)
    panel = RunsPanel(settings)
    qtbot.addWidget(panel)
    panel.refresh()
    panel.select_runs([trained_run])
    panel.export_button.click()
    dialog = panel.export_dialog
    assert dialog.isVisible() and not dialog.qgis_check.isChecked()
    assert dialog.path_edit.text() == str(trained_run / f"{trained_run.name}.sembridge")

    plain = tmp_path / "plain" / "model.sembridge"
    plain.parent.mkdir()
    dialog.path_edit.setText(str(plain))
    with qtbot.waitSignal(dialog.exported, timeout=180000):
        dialog.export_button.click()
    assert dialog.outcome is not None, dialog.error_label.text()
    assert load_bundle(plain).class_names == load_bundle(trained_run / "model.sembridge").class_names
    assert sorted(path.name for path in plain.parent.iterdir()) == ["model.sembridge"], "no QGIS model unasked"

    qgis_bundle = tmp_path / "qgis" / "for_qgis.sembridge"
    qgis_bundle.parent.mkdir()
    dialog.path_edit.setText(str(qgis_bundle))
    dialog.qgis_check.setChecked(True)
    with qtbot.waitSignal(dialog.exported, timeout=180000):
        dialog.export_button.click()
    onnx_path = qgis_bundle.with_name("for_qgis_qgis.onnx")
    assert dialog.outcome.qgis == onnx_path and onnx_path.is_file(), dialog.error_label.text()
    assert str(onnx_path) in dialog.status_label.text() and "Deepness" in dialog.status_label.text()
    bundle = load_bundle(qgis_bundle)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    metadata = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}
    assert metadata["model_type"] == "Segmentor"
    assert metadata["class_names"] == {str(index): name for index, name in enumerate(bundle.class_names)}
    size = int(metadata["tiles_size"])
    with rasterio.open(demo_project() / "scene" / "ucmerced_mosaic.tif") as scene:
        tile = scene.read(window=rasterio.windows.Window(0, 0, size, size)).astype(np.float32)
    mean = np.asarray(metadata["standardization_mean"], np.float32)[:, None, None]
    std = np.asarray(metadata["standardization_std"], np.float32)[:, None, None]
    probabilities = session.run(None, {session.get_inputs()[0].name: ((tile / 255 - mean) / std)[None]})[0]
    assert probabilities.shape == (1, len(bundle.class_names), size, size)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)


@pytest.fixture(scope="module")
def rgb_only_run(tmp_path_factory, demo_config_path, engine_cache) -> Path:
    """A finished tiny run of the demo project without a teacher (KD loss none, no alignment terms)."""
    from sembridge_engine.config import apply_overrides, load_config
    from sembridge_engine.training import train

    config = apply_overrides(load_config(demo_config_path),
                             [*TINY_OVERRIDES, "distill.loss=none", "distill.ot1=false", "distill.ot2=false"])
    return train(config, run_dir=tmp_path_factory.mktemp("rgb-only") / "rgb_only").run_dir


def test_the_teacher_fit_check_compares_a_teacher_run_with_an_rgb_only_run(qtbot, settings, trained_run, rgb_only_run,
                                                                          tmp_path):
    output = tmp_path / "runs"
    teacher_run = shutil.copytree(trained_run, output / "kd")
    second_kd = shutil.copytree(trained_run, output / "kd_again")
    rgb_only = shutil.copytree(rgb_only_run, output / "rgb_only")
    no_student = shutil.copytree(rgb_only_run, output / "rgb_only_without_student")
    (no_student / "checkpoints" / "student.pt").unlink()
    settings.output_dir = str(output)
    panel = RunsPanel(settings)
    qtbot.addWidget(panel)
    panel.refresh()
    for selection in ([teacher_run], [teacher_run, second_kd], [teacher_run, rgb_only, second_kd]):
        panel.select_runs(selection)
        assert not panel.teacher_fit_button.isEnabled()
    panel.select_runs([rgb_only, teacher_run])
    assert panel.teacher_fit_button.isEnabled()

    panel.teacher_fit_button.click()
    dialog = panel.teacher_fit_dialog
    assert dialog.isVisible() and (dialog.teacher_run.root, dialog.rgb_only_run.root) == (teacher_run, rgb_only)
    qtbot.waitUntil(lambda: dialog.worker is None, timeout=180000)
    assert dialog.fit is not None, dialog.error_label.text()
    assert "p = " in dialog.status_label.text() and "chance" in dialog.status_label.text()
    assert dialog.table.rowCount() == 6 and dialog.table.item(0, 0).text() == "AnnualCrop"
    qtbot.wait(50)
    label = dialog.status_label   # the whole verdict is shown, and every class and column without scrolling
    assert label.height() >= label.heightForWidth(label.width())
    assert not dialog.table.verticalScrollBar().isVisible() and not dialog.table.horizontalScrollBar().isVisible()

    panel.select_runs([teacher_run, no_student])
    panel.teacher_fit_button.click()
    failing = panel.teacher_fit_dialog
    qtbot.waitUntil(lambda: failing.worker is None, timeout=180000)
    assert failing.fit is None and "student.pt" in failing.error_label.text() and failing.isVisible()

    panel.select_runs([rgb_only, teacher_run])
    panel.teacher_fit_button.click()
    closed = panel.teacher_fit_dialog
    closed.reject()   # while checking: the check is cancelled and the dialog goes once its thread has stopped
    qtbot.waitUntil(lambda: closed.worker is None, timeout=180000)
    assert not closed.isVisible() and closed.error_label.text() == ""
