"""Data-layer fixtures: small real-format archives copied from the bundled demo project."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from resources import demo_project

DATA_CLASSES = ("AnnualCrop", "Forest", "River")


def _copy_first(source: Path, target: Path, count: int, patterns: tuple[str, ...]) -> None:
    target.mkdir(parents=True)
    files = sorted(path for pattern in patterns for path in source.glob(pattern))
    for path in files[:count]:
        shutil.copy2(path, target / path.name)


@pytest.fixture
def data_ms_archive(tmp_path) -> Path:
    """3 classes x 4 real EuroSAT 13-band uint16 GeoTIFFs."""
    root = tmp_path / "ms"
    for name in DATA_CLASSES:
        _copy_first(demo_project() / "ms" / name, root / name, 4, ("*.tif",))
    return root


@pytest.fixture
def data_rgb_folder(tmp_path) -> Path:
    """3 classes x 3 real UC Merced images (one TIFF, one PNG, one JPEG each)."""
    root = tmp_path / "rgb"
    for name in DATA_CLASSES:
        source, target = demo_project() / "rgb" / name, root / name
        target.mkdir(parents=True)
        for pattern in ("*.tif", "*.png", "*.jpg"):
            shutil.copy2(sorted(source.glob(pattern))[0], target)
    return root


@pytest.fixture
def data_demo_tile() -> Path:
    return sorted((demo_project() / "ms" / "Forest").glob("*.tif"))[0]


@pytest.fixture
def data_demo_rgb_image() -> Path:
    return sorted((demo_project() / "rgb" / "Forest").glob("*.png"))[0]


@pytest.fixture(scope="session")
def scale_bundle(tmp_path_factory):
    """A bundle with footprint and radiometry that tells several demo classes apart (labelling_fixtures)."""
    from .labelling_fixtures import make_scale_bundle

    return make_scale_bundle(tmp_path_factory.mktemp("scale-bundle"))
