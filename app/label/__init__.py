"""The Label map page: panel.py (controls, scenes, runs), map_view.py (the map), jobs.py (engine jobs
and per-scene state), messages.py (engine messages in the panel's words)."""
from app.label.panel import LabelPanel

__all__ = ["LabelPanel"]
