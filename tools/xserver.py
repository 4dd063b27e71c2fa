"""A real X server for the GUI tests and the screenshots when one can be had; Qt's offscreen
platform otherwise.

Keyboard focus, window activation and minimum window sizes behave differently under a real X
server than offscreen (a focus bug that threw every keystroke out of the wizard's path field was
invisible offscreen), so the app tests (tests/app/conftest.py) and tools/screenshots.py run on
Qt's ``xcb`` platform whenever they can:

1. ``QT_QPA_PLATFORM`` already set: respected as it is.
2. ``DISPLAY`` set (a desktop session, or ``xvfb-run``): that server.
3. ``Xvfb`` on PATH: a private server on a free display number (``-displayfd``), with ``openbox``
   as window manager when installed (activation and focus as on a desktop); both stopped at exit.
4. Otherwise, or when Qt cannot open the display (missing xcb libraries): ``offscreen``.

pytest-xvfb covers step 3 without the window manager and without the fallback of step 4, which
is why this small module does it instead.
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys

SCREEN = "1920x1200x24"
_started: list[subprocess.Popen] = []

# Opening a QApplication on xcb fails (or aborts) without a usable display or xcb libraries;
# probing in a child process keeps that failure out of the test process.
_PROBE = "from PySide6.QtWidgets import QApplication; QApplication(['probe'])"


def _stop_started() -> None:
    for process in reversed(_started):
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
    _started.clear()


def _start_xvfb() -> str | None:
    """Start Xvfb on a display number it picks itself; ':N' or None."""
    read_end, write_end = os.pipe()
    try:
        server = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", SCREEN, "-nolisten", "tcp"],
                                  pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        number = pipe.readline().strip()
    if not number.isdigit():
        server.terminate()
        return None
    _started.append(server)
    atexit.register(_stop_started)
    return f":{number}"


def _start_window_manager(display: str) -> None:
    if shutil.which("openbox") is None:
        return
    manager = subprocess.Popen(["openbox", "--sm-disable"], env={**os.environ, "DISPLAY": display},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _started.append(manager)


def _xcb_works(display: str) -> bool:
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
    try:
        return subprocess.run([sys.executable, "-c", _PROBE], env=env, timeout=60,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def choose_qt_platform() -> str:
    """Set ``QT_QPA_PLATFORM`` (and ``DISPLAY``) before any QApplication exists; return a description."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return f"{os.environ['QT_QPA_PLATFORM']} (from the environment)"
    display = os.environ.get("DISPLAY", "")
    started = False
    if not display and shutil.which("Xvfb"):
        display = _start_xvfb() or ""
        started = bool(display)
    if started:
        _start_window_manager(display)  # starts while the probe below runs
    if display and _xcb_works(display):
        os.environ["DISPLAY"] = display
        os.environ["QT_QPA_PLATFORM"] = "xcb"
        return f"xcb on a private Xvfb {display}" if started else f"xcb on {display}"
    _stop_started()
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    return "offscreen (no X server could be started)"


def real_x_server() -> bool:
    return os.environ.get("QT_QPA_PLATFORM") == "xcb"
