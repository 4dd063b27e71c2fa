"""The Monitor page (panel.py) with its plots (plots.py) and stage progress (progress.py)."""
from app.monitor.panel import MonitorPanel

__all__ = ["MonitorPanel"]
