"""Test-wide set-up: Qt offscreen before any QApplication exists, small torch thread pool."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "2")
