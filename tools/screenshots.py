"""Render every main screen of SemBridge Studio to docs/screenshots/*.png, in a real X session.

Uses the bundled demo project and short REAL training runs (tiny epochs via apply_overrides), so
the plots, confusion matrix, teachers, classification grid and label map show actual results.
The window runs on a real X server (a private Xvfb with a window manager when there is no display,
see tools/xserver.py; offscreen only when no X server can be started). Settings, runs and the
teacher cache go to a temporary folder; the user's own are untouched.

    .venv/bin/python tools/screenshots.py [--out docs/screenshots]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOT_OVERRIDES = [
    "teacher.arch=shufflenet_v2_x0_5", "matcher.arch=shufflenet_v2_x0_5", "student.arch=shufflenet_v2_x0_5",
    "teacher.epochs=10", "matcher.epochs=4", "student.epochs=14", "distill.e0=4", "distill.delta_e=4",
    "distill.e_mu=1", "data.ms_tile_size=32", "data.rgb_tile_size=48", "train.device=cpu",
]
BASELINE_OVERRIDES = ["distill.loss=none", "distill.params={}", "distill.ot1=false", "distill.ot2=false",
                      "name=baseline"]
WINDOW_SIZE = (1280, 820)


def wait_for(signal, timeout_ms: int) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()


def settle(app, milliseconds: int = 300) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(milliseconds, loop.quit)
    loop.exec()
    app.processEvents()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tools.xserver import choose_qt_platform

    print(f"Qt platform: {choose_qt_platform()}")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app.main does
    home = Path(tempfile.mkdtemp(prefix="sembridge-shots-"))
    os.environ["SEMBRIDGE_STUDIO_HOME"] = str(home)
    os.environ["SEMBRIDGE_CACHE_DIR"] = str(home / "cache")

    from PySide6.QtCore import QCoreApplication, QEvent, QRectF
    from PySide6.QtWidgets import QApplication, QScrollArea

    from app.help import show_method_help
    from app.main_window import MainWindow
    from app.settings import Settings
    from resources import demo_project
    from sembridge_engine.labelling.options import PixelWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    args.out.mkdir(parents=True, exist_ok=True)
    window = MainWindow(Settings.load(), demo_project() / "demo.toml")
    window.resize(*WINDOW_SIZE)
    window.show()
    wait_for(window.projectLoaded, 120000)

    def shoot(name: str, widget=None) -> None:
        settle(app)
        path = args.out / f"{name}.png"
        (widget or window).grab().save(str(path))
        print(f"wrote {path}")

    wizard = window.train_page.wizard
    window.show_page("Train")
    wait_for(wizard.page_data.inspected, 60000)
    shoot("wizard_1_data")
    for number, name in enumerate(("classes", "models", "distill", "training", "review"), start=2):
        if name == "training":
            wizard.page_training.output_field.set_path(home / "runs")
        wizard.next()
        shoot(f"wizard_{number}_{name}")
    help_window = show_method_help(window)
    shoot("method_help", help_window)
    help_window.close()

    from sembridge_engine.config import apply_overrides

    config = apply_overrides(wizard.config, [*SHOT_OVERRIDES, f"output_dir={home / 'runs'}"])
    baseline = window.start_training(apply_overrides(config, BASELINE_OVERRIDES))
    while window.train_worker is baseline:
        settle(app, 200)
    worker = window.start_training(config)
    while window.train_worker is worker and len(window.monitor.history["student"]) < 6:
        settle(app, 200)
    shoot("monitor_running")
    while window.train_worker is worker:
        settle(app, 200)
    settle(app, 500)
    shoot("monitor_finished")
    monitor = window.monitor
    monitor.tabs.setCurrentWidget(monitor.results_tab)
    shoot("monitor_results")
    teachers = monitor.teachers
    monitor.tabs.setCurrentWidget(teachers)
    wait_for(teachers.loaded, 60000)
    forest = next((index for index in range(teachers.image_combo.count())
                   if teachers.image_combo.itemText(index).startswith("Forest")), 0)
    teachers.image_combo.setCurrentIndex(forest)
    wait_for(teachers.thumbnailsShown, 60000)
    shoot("monitor_teachers")

    window.show_page("Projects & runs")
    window.runs_panel.select_runs([run.root for run in window.runs_panel.runs])
    shoot("runs_compare")
    window.runs_panel.check_teacher_fit()
    fit = window.runs_panel.teacher_fit_dialog
    wait_for(fit.checked, 120000)
    settle(app, 300)
    shoot("teacher_fit", fit)
    fit.reject()

    window.show_page("Classify")
    panel = window.classify_panel
    rgb = demo_project() / "rgb"
    panel.add_paths([rgb / name for name in ("Forest", "River", "Residential", "Highway")])
    wait_for(panel.classified, 300000)
    panel.sort_combo.setCurrentIndex(2)
    shoot("classify")

    window.show_page("Label map")
    label = window.label_panel
    if label.bundle is None:
        wait_for(label.bundleLoaded, 120000)
    label.output_field.set_path(home / "maps")
    label.add_scenes([demo_project() / "scene" / "ucmerced_mosaic.tif"])
    wait_for(label.map_view.sceneShown, 120000)
    shoot("label_map_before")
    label.map_view.set_area(PixelWindow(128, 128, 1280, 1024))
    while label.current_entry().plan is None:
        settle(app, 200)
    label.start()
    wait_for(label.map_view.labelsShown, 600000)
    label.map_view.viewbox.setRange(QRectF(0, 60, 900, 680), padding=0)  # the area's corner, zoomed in
    wait_for(label.map_view.detailShown, 60000)
    label.map_view.hover_label.setText(label.map_view.describe_pixel(640, 560))  # as under the mouse
    assessment = label.assessment
    assessment.reference_field.set_path(demo_project() / "scene" / "ucmerced_mosaic_reference.gpkg")
    wait_for(assessment.layoutRead, 60000)
    assessment.start()
    wait_for(assessment.assessed, 120000)
    settle(app)
    controls = label.findChild(QScrollArea).verticalScrollBar()
    controls.setValue(controls.maximum())  # the assessment, at the foot of the panel's controls
    shoot("label_map")
    window.close()
    window.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    return 0


if __name__ == "__main__":
    sys.exit(main())
