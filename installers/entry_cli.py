"""Frozen entry point of the full `sembridge` command line, shipped beside the desktop app."""
import sys

from sembridge_engine.cli import main

sys.exit(main())
