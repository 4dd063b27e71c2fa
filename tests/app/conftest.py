"""Fixtures for the app tests: a real X server when one can be had, settings and caches under
tmp_path, a tiny real training run."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from resources import demo_project
from tools.xserver import choose_qt_platform

QT_PLATFORM = choose_qt_platform()  # before any QApplication exists
# The app trains at a lower priority so the window stays responsive; the tests' runs compete as
# equals, so the suite's time does not hang on whatever else the machine is running.
os.environ.setdefault("SEMBRIDGE_TRAINING_NICENESS", "0")


def pytest_terminal_summary(terminalreporter) -> None:
    terminalreporter.write_line(f"Qt platform of the app tests: {QT_PLATFORM}")

# Tiny but real: the smallest backbone, 32 px tiles, one epoch per stage.
TINY_OVERRIDES = [
    "teacher.arch=shufflenet_v2_x0_5", "matcher.arch=shufflenet_v2_x0_5", "student.arch=shufflenet_v2_x0_5",
    "teacher.epochs=1", "matcher.epochs=1", "student.epochs=1",
    "data.ms_tile_size=32", "data.rgb_tile_size=32", "train.device=cpu",
]


@pytest.fixture(scope="session", autouse=True)
def engine_cache(tmp_path_factory) -> Path:
    """Teacher/matcher cache of the engine in a session folder (never the user's own cache);
    shared by the runs of one session so a teacher is trained once."""
    folder = tmp_path_factory.mktemp("engine-cache")
    previous = os.environ.get("SEMBRIDGE_CACHE_DIR")
    os.environ["SEMBRIDGE_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("SEMBRIDGE_CACHE_DIR", None)
    else:
        os.environ["SEMBRIDGE_CACHE_DIR"] = previous


@pytest.fixture(autouse=True)
def app_home(tmp_path, monkeypatch) -> Path:
    """Every per-user folder of the app (settings, logs, runs) below tmp_path."""
    home = tmp_path / "home"
    monkeypatch.setenv("SEMBRIDGE_STUDIO_HOME", str(home))
    return home


@pytest.fixture
def settings(app_home):
    from app.settings import Settings

    return Settings.load()


@pytest.fixture(scope="session")
def demo_config_path() -> Path:
    return demo_project() / "demo.toml"


@pytest.fixture
def tiny_config(demo_config_path, tmp_path):
    from sembridge_engine.config import apply_overrides, load_config

    return apply_overrides(load_config(demo_config_path), [*TINY_OVERRIDES, f"output_dir={tmp_path / 'runs'}"])


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, demo_config_path, engine_cache) -> Path:
    """One finished tiny run (with its model.sembridge) for the Classify, Label map and runs tests."""
    from sembridge_engine.config import apply_overrides, load_config
    from sembridge_engine.training import train

    output = tmp_path_factory.mktemp("runs")
    config = apply_overrides(load_config(demo_config_path), [*TINY_OVERRIDES, f"output_dir={output}"])
    result = train(config)
    assert (result.run_dir / "model.sembridge").is_file()
    return result.run_dir


@pytest.fixture(autouse=True)
def no_worker_left_running():
    """A test never leaves a thread behind (Qt aborts when a running QThread is destroyed)."""
    yield
    from app.workers import stop_all_workers

    stop_all_workers()


@pytest.fixture
def window(qtbot, settings, demo_config_path):
    """The main window on the demo project, shown, the project loaded."""
    from app.main_window import MainWindow

    main = MainWindow(settings, demo_config_path)
    qtbot.addWidget(main)
    with qtbot.waitSignal(main.projectLoaded, timeout=60000):
        main.show()
    return main
