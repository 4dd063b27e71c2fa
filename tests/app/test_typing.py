"""Typing into the wizard's path fields as a user does: keys go to whichever widget has focus
(through the window, as from a keyboard), with the window shown and active. Issue 17 item 1:
typing ``/mnt/sat`` left only ``/`` in the field, focus jumped to the sidebar, ``m`` switched to the
Monitor page and the lone ``/`` started a scan of the whole file system."""
from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from resources import demo_project
from sembridge_engine.events import Cancelled

KEY_INTERVAL_MS = 40  # a brisk typist; well under the page's typing pause


@pytest.fixture
def data_page(qtbot, window):
    """The main window shown and active on the wizard's Data page, the demo data inspected."""
    page = window.train_page.wizard.page_data
    with qtbot.waitSignal(page.inspected, timeout=30000):
        window.show_page("Train")
    window.activateWindow()
    assert QTest.qWaitForWindowActive(window, 5000)
    return window, page


def press(window, key, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    QTest.keyClick(window.windowHandle(), key, modifier)


def type_text(qtbot, window, text: str, check=None) -> None:
    """One key at a time through the window, to the focus widget; ``check()`` after each key."""
    for character in text:
        QTest.keyClick(window.windowHandle(), ord(character))
        qtbot.wait(KEY_INTERVAL_MS)
        if check is not None:
            check()


def click_into(qtbot, window, edit) -> None:
    qtbot.mouseClick(edit, Qt.MouseButton.LeftButton)
    press(window, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    assert QApplication.focusWidget() is edit


def test_typing_a_path_keeps_focus_and_scans_only_after_a_pause(qtbot, data_page):
    window, page = data_page
    edit = page.ms_field.edit
    click_into(qtbot, window, edit)
    scans_before = page.scans_started

    def still_typing_here() -> None:
        assert QApplication.focusWidget() is edit, f"focus moved to {QApplication.focusWidget()!r}"
        assert window.stack.currentWidget() is window.train_page
        assert page.scans_started == scans_before, "a half-typed path was scanned"

    type_text(qtbot, window, "/mnt/sat", check=still_typing_here)
    assert edit.text() == "/mnt/sat"
    assert not window.train_page.wizard.next_button.isEnabled()
    with qtbot.waitSignal(page.inspected, timeout=30000):
        pass  # the pause after the last key starts the scan
    assert page.scans_started == scans_before + 1
    assert "does not exist" in page.error_label.text() and "/mnt/sat" in page.error_label.text()
    assert QApplication.focusWidget() is edit


def test_enter_scans_at_once_and_a_file_system_root_is_refused(qtbot, data_page):
    window, page = data_page
    click_into(qtbot, window, page.ms_field.edit)
    type_text(qtbot, window, "/")
    with qtbot.waitSignal(page.inspected, timeout=10000):
        press(window, Qt.Key.Key_Return)
    assert "root of a file system" in page.error_label.text()
    assert page.summary is None and not window.train_page.wizard.next_button.isEnabled()


def test_a_folder_without_images_two_levels_down_is_not_an_archive(qtbot, data_page, tmp_path):
    """The parent of an archive (images three levels down) is what a half-typed path often is."""
    window, page = data_page
    parent = tmp_path / "sat"
    (parent / "archive" / "Forest").mkdir(parents=True)
    (parent / "archive" / "Forest" / "tile.tif").write_bytes(b"II*\0")
    click_into(qtbot, window, page.rgb_field.edit)
    type_text(qtbot, window, str(parent))
    with qtbot.waitSignal(page.inspected, timeout=10000):
        press(window, Qt.Key.Key_Return)
    assert "not an imagery folder" in page.error_label.text()
    assert page.summary is None


def test_typing_on_cancels_the_scan_in_progress_and_stop_cancels_too(qtbot, data_page, monkeypatch):
    """A scan that only ends when cancelled stands in for a walk of a huge folder."""
    window, page = data_page
    started: list[str] = []
    cancelled: list[str] = []
    running = threading.Event()

    def endless_scan(ms_path, *_args, cancel):
        started.append(ms_path)
        running.set()
        while not cancel.cancelled:
            threading.Event().wait(0.01)
        cancelled.append(ms_path)
        raise Cancelled("cancelled by the user")

    monkeypatch.setattr("app.wizard.data_page.inspect_data", endless_scan)
    click_into(qtbot, window, page.ms_field.edit)
    type_text(qtbot, window, str(demo_project()))
    press(window, Qt.Key.Key_Return)
    qtbot.waitUntil(running.is_set, timeout=5000)
    assert page.stop_button.isVisible()

    type_text(qtbot, window, "/ms")  # typing on: the old scan is cancelled at once, a new one waits for a pause
    qtbot.waitUntil(lambda: cancelled == [str(demo_project())], timeout=5000)
    qtbot.waitUntil(lambda: len(started) == 2, timeout=5000)
    assert started[1] == str(demo_project() / "ms")

    with qtbot.waitSignal(page.inspected, timeout=5000):
        qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    assert cancelled[-1] == str(demo_project() / "ms")
    assert "Stopped" in page.status_label.text() and page.summary is None
