"""Frozen entry point of the desktop app (PyInstaller runs this file as a script)."""
import sys

from app.main import main

sys.exit(main())
