"""The Monitor reads runs through the engine's RunFolder: a reopened run shows its curves, matching
markers, log and results; a resumed run shows its whole history; the ETA counts only this session."""
from __future__ import annotations

from pathlib import Path

from app.monitor import MonitorPanel
from app.monitor.progress import StageProgress
from app.workers import TrainWorker
from sembridge_engine.config import apply_overrides
from sembridge_engine.events import CancelToken, CheckpointSaved
from sembridge_engine.training import train
from sembridge_engine.training.rundir import RunFolder
from tests.app.helpers import wait_worker


def test_a_reopened_run_shows_its_markers_log_and_results(qtbot, trained_run):
    monitor = MonitorPanel()
    qtbot.addWidget(monitor)
    monitor.load_run(trained_run)
    monitor.flush()
    folder = RunFolder(trained_run)
    assert [marker.epoch for marker in folder.markers()] == [0]
    assert sorted(monitor.markers) == [0] and monitor.markers[0].startswith("SSM")
    assert all(plot.markers for plot in monitor.plots.values()), "the SSM round is marked on every plot"
    log_text = monitor.log_view.toPlainText()
    assert folder.log_lines() and folder.log_lines()[0] in log_text
    points = monitor.point_counts()
    assert points["accuracy"] > 0 and points["loss"] > 0 and points["transport"] > 0
    assert any(row.get("grad_share_ot1") for row in folder.stage_metrics("student"))
    assert points["gradient"] > 0, "the gradient shares the engine logs per epoch are plotted"
    assert monitor.gradient_plot.view.getAxis("left").logMode, "shares of ~1e-4 beside ~0.7 need a log axis"
    final = folder.final_metrics()
    assert monitor.confusion.matrix.shape == (len(final.class_names),) * 2
    assert monitor.f1_bars.values == [float(value) for value in final.test_per_class_f1]
    assert "Test OA" in monitor.result_label.text()
    assert all(bar.value() == 1000 for bar in monitor.stages.bars.values())


def test_a_resumed_run_shows_the_whole_history_and_earlier_markers(qtbot, tiny_config):
    """Cancelled after student epoch 1 (a DynM round after it), then resumed: the Monitor shows
    epochs 1-2, the SSM and DynM markers of the first session and its log."""
    config = apply_overrides(tiny_config, ["student.epochs=2", "distill.e0=1", "distill.delta_e=1", "distill.e_mu=0"])
    token = CancelToken()

    def cancel_after_first_student_epoch(event) -> None:
        if isinstance(event, CheckpointSaved) and (event.stage, event.epoch) == ("student", 1):
            token.cancel()

    # The first session, cancelled (the engine in this process: no second training process to start).
    first = train(config, callback=cancel_after_first_student_epoch, cancel=token)
    assert first.status == "cancelled"
    folder = RunFolder(first.run_dir)
    assert [row["epoch"] for row in folder.stage_metrics("student")] == [1]

    monitor = MonitorPanel()
    qtbot.addWidget(monitor)
    resumed = TrainWorker(resume_dir=folder.root)
    monitor.attach(resumed, "resumed")
    assert sorted(monitor.history["student"]) == [1], "the history on disk is shown before the run goes on"
    assert sorted(monitor.markers) == [0, 1]
    resumed.start()
    wait_worker(qtbot, resumed, timeout=240000)
    assert resumed.error == "", resumed.error
    monitor.flush()
    assert sorted(monitor.history["student"]) == [1, 2]
    assert monitor.accuracy_plot.series["val_oa"][0] == [1, 2]
    assert {0, 1} <= set(monitor.markers)
    assert len(monitor.transport_plot.markers) == len(monitor.markers)
    assert "student classes" in monitor.log_view.toPlainText(), "the first session's log lines are shown"
    assert resumed.resuming


def test_eta_after_a_resume_counts_only_the_epochs_of_this_session(qtbot):
    """Resumed at epoch 16 of 40: half an epoch in 5 s leaves 24.5 epochs, about 4 min."""
    now = [100.0]
    progress = StageProgress(clock=lambda: now[0])
    qtbot.addWidget(progress)
    progress.start_stage("student", 40)
    now[0] += 5.0
    progress.progress("student", 16, 50, 100)
    assert "about 4 min" in progress.eta_label.text(), progress.eta_label.text()
    assert progress.bars["student"].value() == int(15.5 / 40 * 1000)


def test_the_teachers_tab_shows_each_images_teachers_and_their_diversity(qtbot, trained_run):
    monitor = MonitorPanel()
    qtbot.addWidget(monitor)
    monitor.load_run(trained_run)
    teachers = monitor.teachers
    assert monitor.tabs.isTabEnabled(monitor.tabs.indexOf(teachers))
    with qtbot.waitSignal(teachers.loaded, timeout=30000):
        monitor.tabs.setCurrentWidget(teachers)
    folder = RunFolder(trained_run)
    table = folder.read_match_table(0)
    assert teachers.image_combo.count() == len(table)
    wanted = table[len(table) // 2]
    with qtbot.waitSignal(teachers.thumbnailsShown, timeout=30000):
        teachers.image_combo.setCurrentIndex(teachers.image_combo.findData(wanted["rgb_path"]))
    assert teachers.table.rowCount() == len(folder.match_rounds())
    assert teachers.table.item(0, 1).text() == Path(wanted["ms_path"]).name
    assert teachers.table.item(0, 2).text() == wanted["class"]
    assert teachers.table.item(0, 3).text().startswith("similarity ")
    assert not teachers.table.item(0, 1).icon().isNull(), "the MS teacher's pseudo-RGB thumbnail is shown"
    assert teachers.rgb_picture.pixmap() is not None and not teachers.rgb_picture.pixmap().isNull()
    diversity = folder.teacher_diversity()[0]
    assert teachers.diversity_table.rowCount() == len(diversity)
    first_class = teachers.diversity_table.verticalHeaderItem(0).text()
    assert teachers.diversity_table.item(0, 0).text().startswith(f"{diversity[first_class].teachers} · ")


def test_epoch_axes_tick_whole_epochs_and_log_axes_label_decades_only(qtbot):
    from app.monitor.plots import DecadeAxis, EpochAxis

    epochs = EpochAxis("bottom")
    for low, high in ((0.8, 2.2), (0, 1), (1, 40)):
        ticks = [value for _spacing, values in epochs.tickValues(low, high, 600) for value in values]
        assert ticks and all(float(value).is_integer() for value in ticks), (low, high, ticks)
    log_axis = DecadeAxis("left")
    log_axis.setLogMode(False, True)
    labels = log_axis.tickStrings([-2.0, -1.69897, -1.0, 0.0, 0.30103], 1.0, 1.0)
    assert labels == ["0.01", "", "0.1", "1", ""], "minor ticks between decades carry no crowding labels"


def test_opening_a_folder_without_a_file_manager_says_where_it_is(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox, QWidget

    from app.widgets import open_folder

    monkeypatch.setattr("app.widgets.QDesktopServices.openUrl", lambda _url: False)
    parent = QWidget()
    qtbot.addWidget(parent)
    assert open_folder(parent, tmp_path) is False
    box = parent.findChild(QMessageBox, "noFileManager")
    assert box is not None and str(tmp_path) in box.text()
    box.close()
