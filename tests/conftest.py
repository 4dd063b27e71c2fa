"""Test-wide set-up: torch's OpenMP threads sleep when idle (as the CLI and app set it) instead of
spinning against the decoder threads. The Qt platform of the app tests is chosen in
tests/app/conftest.py (a real X server when one can be had)."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
