"""The entry point opens the bundled demo project by default."""
from __future__ import annotations

from pathlib import Path

from app.main import default_project, parse_args


def test_default_project_is_the_bundled_demo():
    path = default_project()
    assert path.name == "demo.toml" and path.is_file()
    assert parse_args([]).project is None
    assert parse_args(["other.toml"]).project == Path("other.toml")
