"""User settings persisted as JSON under the platformdirs config folder.

``SEMBRIDGE_STUDIO_HOME`` redirects every per-user folder (config, logs, data) below one
directory, so tests and portable installs never touch the user's real settings.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import platformdirs

APP_NAME = "sembridge-studio"
HOME_ENV = "SEMBRIDGE_STUDIO_HOME"
MAX_RECENT = 10


def _home_override() -> Path | None:
    value = os.environ.get(HOME_ENV, "")
    return Path(value) if value else None


def config_dir() -> Path:
    home = _home_override()
    return home / "config" if home else Path(platformdirs.user_config_dir(APP_NAME))


def log_dir() -> Path:
    home = _home_override()
    return home / "logs" if home else Path(platformdirs.user_log_dir(APP_NAME))


def data_dir() -> Path:
    home = _home_override()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP_NAME))


def default_output_dir() -> Path:
    """Where runs go unless the user picks another folder."""
    return data_dir() / "runs"


@dataclass
class Settings:
    output_dir: str = ""
    device: str = "auto"
    recent_projects: list[str] = field(default_factory=list)
    window_geometry: str = ""
    window_state: str = ""
    last_bundle: str = ""
    last_folders: dict[str, str] = field(default_factory=dict)  # file-dialog key -> folder last chosen there
    training_threads: int = 0  # CPU threads of a training run; 0: every core but one (the window keeps one)

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir) if self.output_dir else default_output_dir()

    def start_folder(self, key: str, current: str | Path = "") -> str:
        """Where a file dialog for ``key`` opens: the current value's folder when it exists, else the
        folder last chosen in that dialog, else the home folder (never the working directory)."""
        candidates = []
        if str(current):
            current = Path(current).expanduser()
            candidates += [current, current.parent]
        candidates.append(Path(self.last_folders.get(key) or Path.home()))
        return str(next((path for path in candidates if path.is_dir()), Path.home()))

    def remember_folder(self, key: str, chosen: str | Path) -> None:
        """Remember the folder the user was browsing in dialog ``key``: the one holding the chosen
        file or folder (saved at once)."""
        self.last_folders[key] = str(Path(chosen).parent)
        self.save()

    def add_recent_project(self, path: str | Path) -> None:
        text = str(Path(path))
        self.recent_projects = [text] + [p for p in self.recent_projects if p != text]
        del self.recent_projects[MAX_RECENT:]

    @staticmethod
    def file_path() -> Path:
        return config_dir() / "settings.json"

    @classmethod
    def load(cls) -> "Settings":
        """Read the settings file; a missing or damaged file gives the defaults."""
        try:
            raw = json.loads(cls.file_path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__} if isinstance(raw, dict) else {}
        settings = cls()
        for key, value in known.items():
            if isinstance(value, type(getattr(settings, key))):
                setattr(settings, key, value)
        return settings

    def save(self) -> None:
        """Write atomically so a crash never leaves half a settings file."""
        path = self.file_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        os.replace(tmp, path)
