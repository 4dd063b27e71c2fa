"""The window fits a 1366x768 laptop: at 1280x720 every page lays out without being forced larger,
and a finished run's results show every class (screenshots of each page go to the test's folder)."""
from __future__ import annotations

from app.main_window import PAGES

SMALL_SCREEN = (1280, 720)


def test_every_page_fits_1280_by_720_with_a_finished_run_loaded(qtbot, window, trained_run, tmp_path):
    window.monitor.load_run(trained_run)
    window.monitor.flush()
    window.resize(*SMALL_SCREEN)
    for page in PAGES:
        window.show_page(page)
        qtbot.wait(100)
        hint = window.minimumSizeHint()
        assert hint.width() <= SMALL_SCREEN[0] and hint.height() <= SMALL_SCREEN[1], f"{page}: needs {hint.toTuple()}"
        assert window.size().toTuple() == SMALL_SCREEN, f"{page}: the window grew to {window.size().toTuple()}"
        assert window.grab().save(str(tmp_path / f"{page.split()[0].lower()}.png"))

    window.show_page("Monitor")
    monitor = window.monitor
    assert monitor.tabs.currentWidget() is monitor.results_tab
    qtbot.wait(100)
    classes = monitor.confusion.matrix.shape[1]
    (x_low, x_high), _ = monitor.confusion.getViewBox().viewRange()
    assert x_low <= 0 and x_high >= classes, "every column of the confusion matrix is in view"
    _, (y_low, y_high) = monitor.f1_bars.getViewBox().viewRange()
    assert y_low <= 0 and y_high >= len(monitor.f1_bars.values) - 1, "every class's F1 bar is in view"
    assert monitor.confusion.width() >= 240 and monitor.f1_bars.width() >= 240
