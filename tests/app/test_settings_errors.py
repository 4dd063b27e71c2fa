"""Settings live under platformdirs (redirected to tmp_path here); crashes become a dialog + log."""
from __future__ import annotations

import sys

from PySide6.QtWidgets import QApplication, QMessageBox

from app import errors
from app.settings import Settings, config_dir, default_output_dir, log_dir


def test_settings_round_trip_under_the_redirected_home(app_home):
    assert config_dir().is_relative_to(app_home)
    assert default_output_dir() == app_home / "data" / "runs"
    settings = Settings.load()
    assert settings.output_path == default_output_dir()
    settings.device = "cpu"
    settings.output_dir = str(app_home / "elsewhere")
    for number in range(15):
        settings.add_recent_project(f"/projects/p{number}.toml")
    settings.save()
    loaded = Settings.load()
    assert loaded.device == "cpu"
    assert loaded.output_path == app_home / "elsewhere"
    assert loaded.recent_projects[0] == "/projects/p14.toml" and len(loaded.recent_projects) == 10


def test_damaged_settings_file_gives_defaults(app_home):
    Settings.file_path().parent.mkdir(parents=True)
    Settings.file_path().write_text("{not json")
    assert Settings.load() == Settings()


def test_uncaught_exception_shows_a_dialog_and_writes_the_traceback(qtbot, app_home, monkeypatch):
    monkeypatch.setattr(sys, "__excepthook__", lambda *args: None)
    try:
        raise RuntimeError("the scene has no bands")
    except RuntimeError as error:
        errors.handle_exception(type(error), error, error.__traceback__)
    logs = list(log_dir().glob("crash-*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "RuntimeError: the scene has no bands" in text and "Traceback" in text
    dialogs = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.objectName() == "crashDialog"]
    assert dialogs and "the scene has no bands" in dialogs[-1].text()
    assert str(logs[0]) in dialogs[-1].text()
    for dialog in dialogs:
        dialog.close()
