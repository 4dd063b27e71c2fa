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


def test_file_dialogs_open_where_that_field_was_last_used(qtbot, settings, tmp_path, monkeypatch):
    """Never the source tree or /: the home folder first, then the folder chosen last time for that field."""
    from pathlib import Path

    from app.widgets import PathField

    asked: list[str] = []
    answers = iter([str(tmp_path / "archive"), ""])
    (tmp_path / "archive").mkdir()
    monkeypatch.setattr("app.widgets.QFileDialog.getExistingDirectory",
                        lambda _parent, _title, start: asked.append(start) or next(answers))
    first = PathField(settings=settings, key="ms_archive")
    qtbot.addWidget(first)
    first._choose_folder()
    assert asked == [str(Path.home())] and first.path() == str(tmp_path / "archive")
    second = PathField(settings=settings, key="ms_archive")
    qtbot.addWidget(second)
    second._choose_folder()
    assert asked[1] == str(tmp_path), "the next dialog opens beside the folder chosen last"
    from app.settings import Settings

    assert Settings.load().last_folders["ms_archive"] == str(tmp_path)
