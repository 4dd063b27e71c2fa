"""Files shipped with SemBridge Studio (the bundled demo project, icons), addressed through
importlib.resources so an installed or frozen app finds them wherever it runs from."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def resource_path(*parts: str) -> Path:
    """Filesystem path of a shipped resource, e.g. ``resource_path("demo", "demo.toml")``."""
    return Path(str(files(__name__).joinpath(*parts)))


def demo_project() -> Path:
    """Folder of the bundled real demo project (MS tiles, RGB images, a scene, a run config)."""
    return resource_path("demo")
