"""Training in the background: events become throttled signals, Cancel stops, Resume finishes."""
from __future__ import annotations

import json
import time

from PySide6.QtCore import Qt
from sembridge_engine.events import BatchProgress, EpochFinished, RunFailed

from app.main_window import MainWindow
from app.monitor import MonitorPanel
from app.workers import MAX_UPDATES_PER_SECOND, EngineWorker, TrainWorker
from tests.app.helpers import wait_worker


def test_batch_progress_is_throttled_but_epoch_ends_always_arrive(qtbot):
    worker = EngineWorker(lambda callback, cancel: None)
    received = []
    worker.batchProgress.connect(lambda *args: received.append(args))
    epochs = []
    worker.epochFinished.connect(lambda *args: epochs.append(args))
    for done in range(1, 1001):
        worker.on_event(BatchProgress("student", 1, done, 1000))
    worker.on_event(EpochFinished("student", 1, 1, {"val_oa": 0.5}))
    assert 1 <= len(received) <= 5
    assert received[-1] == ("student", 1, 1000, 1000)
    assert epochs == [("student", 1, 1, {"val_oa": 0.5})]
    assert MAX_UPDATES_PER_SECOND <= 20


def test_engine_failure_becomes_a_failed_signal_not_an_exception(qtbot):
    def job(callback, cancel):
        callback(RunFailed("/nowhere", "disk full"))
        raise OSError("disk full")

    worker = EngineWorker(job)
    with qtbot.waitSignal(worker.failed, timeout=10000) as blocker:
        worker.start()
    assert blocker.args == ["disk full", False]
    worker.wait()


def test_cancel_button_stops_the_worker(qtbot):
    def job(callback, cancel):
        callback(BatchProgress("student", 1, 1, 100))
        while not cancel.cancelled:
            time.sleep(0.01)
        cancel.raise_if_cancelled()

    monitor = MonitorPanel()
    qtbot.addWidget(monitor)
    worker = EngineWorker(job)
    monitor.attach(worker, "fake run")
    with qtbot.waitSignal(worker.batchProgress, timeout=10000):
        worker.start()
    with qtbot.waitSignal(worker.failed, timeout=10000) as blocker:
        qtbot.mouseClick(monitor.cancel_button, Qt.MouseButton.LeftButton)
    assert blocker.args == ["Cancelled by the user.", True]
    worker.wait()


def test_cancel_stops_a_run_and_resume_finishes_it(qtbot, settings, tiny_config, demo_config_path):
    """A plain-RGB run (loss none, no OT terms: no teacher) keeps this short; the cancel/resume path
    is the same for all stages."""
    from sembridge_engine.config import apply_overrides

    config = apply_overrides(tiny_config, ["distill.loss=none", "distill.ot1=false", "distill.ot2=false",
                                           "student.epochs=2"])
    window = MainWindow(settings, demo_config_path)
    qtbot.addWidget(window)

    worker = window.start_training(config)
    assert isinstance(worker, TrainWorker)
    # Cancel right after the first student checkpoint, inside the engine's callback (a direct
    # connection), so the short run cannot finish before the cancel lands.
    worker.checkpointSaved.connect(lambda *_: worker.cancel(), Qt.ConnectionType.DirectConnection)
    wait_worker(qtbot, worker, timeout=120000)
    qtbot.waitUntil(lambda: window.train_worker is None, timeout=5000)
    assert worker.was_cancelled
    run_dir = worker.run_dir
    assert json.loads((run_dir / "run.json").read_text())["status"] == "cancelled"
    assert (run_dir / "checkpoints" / "student.pt").is_file()
    assert not (run_dir / "model.sembridge").exists()
    assert "cancelled" in window.monitor.title.text()

    runs = window.runs_panel
    window.show_page("Projects & runs")
    assert [run.status for run in runs.runs] == ["cancelled"]
    epochs_column = runs.COLUMNS.index("Epochs T/M/S")
    assert runs.table.item(0, epochs_column).text() == "—/—/2", "the RGB-only baseline trains no teacher or matcher"
    runs.select_runs([run_dir])
    fields = [runs.compare_table.verticalHeaderItem(row).text() for row in range(runs.compare_table.rowCount())]
    assert runs.compare_table.item(fields.index("SSM / DynM / OT"), 0).text() == "— (no teacher)"
    runs.table.selectRow(0)
    assert runs.resume_button.isEnabled()
    with qtbot.waitSignal(window.trainingStarted, timeout=5000) as started:
        runs.resume_button.click()
    resumed = started.args[0]
    assert resumed.resuming and resumed.run_dir == run_dir
    wait_worker(qtbot, resumed, timeout=180000)
    qtbot.waitUntil(lambda: window.train_worker is None, timeout=5000)
    assert resumed.error == "", resumed.error
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    assert (run_dir / "model.sembridge").is_file()
    student_epochs = [row["epoch"] for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                      if row["stage"] == "student"]
    assert student_epochs == [1, 2], "resume continued after the saved epoch instead of starting over"
    assert window.monitor.point_counts()["accuracy"] > 0
    assert [run.status for run in runs.runs] == ["finished"]


def test_training_runs_in_its_own_process_not_the_ui_process(qtbot, tiny_config, monkeypatch):
    """Training (and the export, ONNX check and predictions at its end) must not hold the UI
    process's GIL: in this process the pipeline is replaced by a function that fails the test."""
    from sembridge_engine.config import apply_overrides
    from sembridge_engine.training.rundir import RunFolder

    def trained_in_the_ui_process(*_args, **_kwargs):
        raise AssertionError("training ran inside the UI process")

    monkeypatch.setattr("sembridge_engine.training.pipeline.train", trained_in_the_ui_process)
    config = apply_overrides(tiny_config, ["distill.loss=none", "distill.ot1=false", "distill.ot2=false"])
    worker = TrainWorker(config)
    epochs = []
    worker.epochFinished.connect(lambda stage, epoch, _n, _m: epochs.append((stage, epoch)))
    worker.start()
    wait_worker(qtbot, worker, timeout=180000)
    assert worker.error == "", worker.error
    assert epochs == [("student", 1)], "the child's events reach the UI process"
    assert RunFolder(worker.run_dir).status == "finished" and RunFolder(worker.run_dir).has_bundle


def _child_report(qtbot, config, threads: int = 0) -> dict:
    """What a training process reports of itself (read inside it from torch and the OS); the config
    points at a missing archive, so the run fails right after the report."""
    worker = TrainWorker(config, threads=threads)
    worker.start()
    wait_worker(qtbot, worker, timeout=120000)
    assert "missing_archive" in worker.error, worker.error
    return worker.child_report


def test_the_training_process_leaves_the_window_a_core_and_runs_at_the_lowest_priority(qtbot, tiny_config, tmp_path,
                                                                                         monkeypatch):
    """Starved of a core by the training threads, the UI froze for 190-240 ms under load; the child
    must cap torch's pools (and OpenMP / MKL / OpenBLAS, through the environment before they load) at
    all cores but one, and lower its priority to the least."""
    import os

    from sembridge_engine.config import apply_overrides

    from app.training_process import BACKGROUND_NICENESS, NICENESS_ENV, THREADS_ENV, usable_cores

    monkeypatch.delenv(NICENESS_ENV, raising=False)  # the tests' conftest lets runs compete as equals
    monkeypatch.delenv(THREADS_ENV, raising=False)
    config = apply_overrides(tiny_config, [f"data.ms_path={tmp_path / 'missing_archive'}"])
    report = _child_report(qtbot, config)
    expected = max(1, usable_cores() - 1)
    assert report["pid"] != os.getpid()
    assert report["torch_threads"] == expected and report["interop_threads"] == expected, report
    assert report["environment"]["OMP_NUM_THREADS"] == str(expected) == report["environment"]["OPENBLAS_NUM_THREADS"]
    assert report["imported_before_limits"] == [], "torch or numpy loaded its thread pools before the cap"
    if os.name == "posix":
        assert report["niceness"] == BACKGROUND_NICENESS == 19
    if usable_cores() == 2:
        assert report["torch_threads"] == 1


def test_training_threads_can_be_raised_by_setting_or_environment(qtbot, tiny_config, tmp_path, monkeypatch):
    from sembridge_engine.config import apply_overrides

    from app.training_process import THREADS_ENV, training_threads

    monkeypatch.setenv(THREADS_ENV, "3")
    assert training_threads() == 3 and training_threads(2) == 2, "the app setting wins over the environment"
    config = apply_overrides(tiny_config, [f"data.ms_path={tmp_path / 'missing_archive'}"])
    report = _child_report(qtbot, config, threads=2)
    assert report["torch_threads"] == 2 and report["interop_threads"] == 2, "the setting reaches the training process"
    assert report["environment"]["MKL_NUM_THREADS"] == "2"
