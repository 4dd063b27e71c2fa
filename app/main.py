"""Entry point of ``sembridge-studio``: opens the bundled demo project unless given a config."""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
from pathlib import Path

from PySide6.QtWidgets import QApplication

from app.errors import install_excepthook
from app.settings import Settings, log_dir


def default_project() -> Path:
    from resources import demo_project

    return demo_project() / "demo.toml"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sembridge-studio", description="SemBridge Studio desktop app")
    parser.add_argument("project", nargs="?", type=Path, default=None,
                        help="run configuration (TOML) to open; default: the bundled demo project")
    return parser.parse_known_args(argv)[0]


def setup_logging() -> None:
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.FileHandler(folder / "sembridge-studio.log", encoding="utf-8")])


def main(argv: list[str] | None = None) -> int:
    # Idle OpenMP threads sleep instead of spinning: on small machines spinning threads (one team
    # per thread that calls torch) starve the UI thread and each other; measured 3.5x faster
    # training and fewer UI stalls on a 2-core box (tests/benchmarks/bench_gui_stall.py).
    # Must be set before torch is imported, which the app does lazily.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    multiprocessing.freeze_support()  # a frozen app starts its training process through this entry point
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    setup_logging()
    install_excepthook()
    app = QApplication.instance() or QApplication([sys.argv[0], *argv])
    app.setApplicationName("SemBridge Studio")
    app.setOrganizationName("SemBridge")

    from app.main_window import MainWindow

    window = MainWindow(Settings.load(), (args.project or default_project()).resolve())
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
