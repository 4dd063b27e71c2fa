"""Last-resort error handling: an uncaught exception becomes a readable dialog and a log file
(the traceback goes to the platformdirs log folder) instead of a silent crash."""
from __future__ import annotations

import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from PySide6.QtWidgets import QApplication, QMessageBox

from app.settings import log_dir


_open_dialogs: list[QMessageBox] = []


def write_crash_log(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> Path:
    """Append the traceback to a dated log file and return its path."""
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc)
    path = folder / f"crash-{stamp:%Y%m%d}.log"
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"=== {stamp.isoformat()} ===\n{text}\n")
    return path


def readable_message(exc: BaseException) -> str:
    """One line a user can act on: the exception's own message, or its type if it has none."""
    message = str(exc).strip()
    return message if message else type(exc).__name__


def handle_exception(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    log_path = write_crash_log(exc_type, exc, tb)
    sys.__excepthook__(exc_type, exc, tb)
    if QApplication.instance() is None:
        return
    box = QMessageBox(QMessageBox.Icon.Critical, "Unexpected error",
                      f"{readable_message(exc)}\n\nThe details were written to:\n{log_path}")
    box.setDetailedText("".join(traceback.format_exception(exc_type, exc, tb)))
    box.setObjectName("crashDialog")
    _open_dialogs.append(box)
    box.finished.connect(lambda _result: _open_dialogs.remove(box))
    box.open()


def install_excepthook() -> None:
    sys.excepthook = handle_exception
