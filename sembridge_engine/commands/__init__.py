"""Sub-commands of the `sembridge` CLI, one module each (see cli.py)."""
