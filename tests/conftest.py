"""Test-wide set-up: Qt offscreen before any QApplication exists; torch's OpenMP threads sleep
when idle (as the CLI and app set it) instead of spinning against the decoder threads."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
