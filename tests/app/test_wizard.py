"""The training wizard, driven page by page as a user would, up to a short real run."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QDoubleSpinBox, QSpinBox

from resources import demo_project
from tests.app.helpers import wait_worker


def open_wizard(qtbot, window):
    wizard = window.train_page.wizard
    with qtbot.waitSignal(wizard.page_data.inspected, timeout=30000):
        window.show_page("Train")
    return wizard


def test_window_opens_on_demo_project_with_device_in_status_bar(window):
    assert window.project_config.name == "demo"
    assert window.device_label.text().startswith("Device: ")
    assert "CPU" in window.device_label.text() or "GPU" in window.device_label.text() or "MPS" in window.device_label.text()
    assert window.stack.currentWidget() is window.runs_panel
    assert "demo" in window.runs_panel.project_label.text()


def test_wizard_walk_launch_and_finish_a_real_run(qtbot, window, tmp_path):
    wizard = open_wizard(qtbot, window)
    data = wizard.page_data
    demo = demo_project()
    with qtbot.waitSignal(data.inspected, timeout=30000):
        data.ms_field.set_path(demo / "ms")
        data.rgb_field.set_path(demo / "rgb")
    assert data.isComplete()
    assert "120 images in 6 classes" in data.summary_label.text()
    assert data.ms_picture.pixmap() is not None and not data.ms_picture.pixmap().isNull()
    wizard.next()

    classes = wizard.page_classes
    assert wizard.currentPage() is classes
    assert classes.table.rowCount() == 6
    classes.set_checked({"AnnualCrop", "Forest", "Highway", "Residential", "River"})
    assert classes.isComplete()
    wizard.next()

    models = wizard.page_models
    assert "shufflenet_v2_x0_5" in [models.student_combo.itemText(i) for i in range(models.student_combo.count())]
    for combo in (models.teacher_combo, models.matcher_combo, models.student_combo):
        combo.setCurrentText("shufflenet_v2_x0_5")
    wizard.next()

    distill = wizard.page_distill
    distill.set_loss("kd")
    assert "temperature" in distill.param_editors
    wizard.next()

    training = wizard.page_training
    for stage in ("teacher", "matcher", "student"):
        training.epochs[stage].setValue(1)
    training.ms_tile.setValue(32)
    training.rgb_tile.setValue(32)
    training.device_combo.setCurrentIndex(training.device_combo.findData("cpu"))
    training.output_field.set_path(tmp_path / "runs")
    wizard.next()

    review = wizard.page_review
    assert wizard.currentPage() is review and review.valid
    assert 'arch = "shufflenet_v2_x0_5"' in review.toml_view.toPlainText()
    assert "Estimated memory" in review.estimate_label.text()
    saved = wizard.save_config(tmp_path / "saved.toml")
    from sembridge_engine.config import load_config

    reloaded = load_config(saved)
    assert reloaded.data.classes == ["AnnualCrop", "Forest", "Highway", "Residential", "River"]
    assert reloaded.student.epochs == 1 and reloaded.data.rgb_tile_size == 32

    with qtbot.waitSignal(window.trainingStarted, timeout=5000) as started:
        qtbot.mouseClick(wizard.launch_button, Qt.MouseButton.LeftButton)
    worker = started.args[0]
    assert window.stack.currentWidget() is window.monitor
    wait_worker(qtbot, worker, timeout=240000)
    qtbot.waitUntil(lambda: window.train_worker is None, timeout=5000)

    assert worker.error == "", worker.error
    run_dir = worker.run_dir
    assert (run_dir / "model.sembridge").is_file()
    points = window.monitor.point_counts()
    assert points["accuracy"] > 0 and points["loss"] > 0 and points["transport"] > 0
    assert window.monitor.transport_plot.markers, "the SSM matching marker is drawn"
    assert window.monitor.confusion.matrix is not None
    assert window.monitor.confusion.matrix.shape == (5, 5)
    assert len(window.monitor.f1_bars.values) == 5
    assert window.monitor.bundle_button.isEnabled()
    window.runs_panel.refresh()
    assert [run.status for run in window.runs_panel.runs] == ["finished"]
    assert window.classify_panel.bundle_field.path() == str(run_dir / "model.sembridge")


def test_bad_folder_shows_an_inline_error(qtbot, window, tmp_path):
    wizard = open_wizard(qtbot, window)
    data = wizard.page_data
    with qtbot.waitSignal(data.inspected, timeout=30000):
        data.ms_field.set_path(tmp_path / "does-not-exist")
    assert data.error_label.isVisibleTo(data)
    assert "does not exist" in data.error_label.text()
    assert not data.isComplete()
    assert not wizard.next_button.isEnabled()

    empty = tmp_path / "empty"
    empty.mkdir()
    with qtbot.waitSignal(data.inspected, timeout=30000):
        data.ms_field.set_path(demo_project() / "ms")
        data.rgb_field.set_path(empty)
    assert "RGB folder:" in data.error_label.text() and "not an imagery folder" in data.error_label.text()
    assert not data.isComplete()


def test_distill_page_follows_the_loss_registry(qtbot, window):
    from sembridge_engine.distill.losses import KD_LOSSES
    from sembridge_engine.distill.matching import dynm_epochs

    wizard = open_wizard(qtbot, window)
    wizard.next()
    wizard.next()
    wizard.next()
    distill = wizard.page_distill
    assert wizard.currentPage() is distill
    for name, spec in KD_LOSSES.items():
        distill.set_loss(name)
        assert set(distill.param_editors) == set(spec.defaults)
        assert distill.pssm_check.isEnabled() == spec.supports_pssm
        for key, default in spec.defaults.items():
            editor = distill.param_editors[key]
            if isinstance(default, bool):
                assert isinstance(editor, QCheckBox) and editor.isChecked() == default
            elif isinstance(default, int):
                assert isinstance(editor, QSpinBox) and editor.value() == default
            else:
                assert isinstance(editor, QDoubleSpinBox) and editor.value() == pytest.approx(default, abs=1e-4)
    distill.set_loss("kd")
    distill.e0.setValue(3)
    distill.delta_e.setValue(4)
    distill.e_mu.setValue(1)
    expected = dynm_epochs(3, 4, 1, wizard.config.student.epochs)
    assert ", ".join(str(e) for e in expected) in distill.schedule_label.text()
    distill.param_editors["temperature"].setValue(2.5)
    wizard.next()
    assert wizard.config.distill.params == {"temperature": 2.5}


def test_closing_the_window_persists_its_geometry(window):
    from app.settings import Settings

    window.close()
    saved = Settings.load()
    assert saved.window_geometry and saved.window_state
    assert saved.recent_projects[0].endswith("demo.toml")
