"""Run folders exactly as the training pipeline leaves them (student.safetensors + student.json),
built from a real backbone and channel stats measured on the demo RGB images, for export/labelling tests."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from resources import demo_project
from sembridge_engine import __version__
from sembridge_engine.data.geometry import training_footprint
from sembridge_engine.data.radiometry import input_radiometry
from sembridge_engine.data.readers import read_header, read_image
from sembridge_engine.data.transforms import compute_channel_stats, preprocess_arrays
from sembridge_engine.models.backbones import build_backbone

DEMO_CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Residential", "River"]
TEST_ARCH = "shufflenet_v2_x0_5"
TEST_TILE = 32


@contextmanager
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine two spinning threads are many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module", autouse=False)
def single_torch_thread():
    with one_torch_thread():
        yield


def demo_rgb_files(per_class: int = 2) -> list[Path]:
    root = demo_project() / "rgb"
    return [path for name in DEMO_CLASSES for path in sorted((root / name).iterdir())[:per_class]]


def demo_non_square_rgb() -> Path:
    """The demo's 256 x 249 UC Merced photo (JPEG)."""
    return demo_project() / "rgb" / "River" / "river83.jpg"


def demo_scene() -> Path:
    return demo_project() / "scene" / "scene_subset.tif"


def demo_mosaic() -> Path:
    """The held-out UC Merced mosaic (0.3 m, EPSG:32610) and its reference GeoPackage's path, by stem."""
    return demo_project() / "scene" / "ucmerced_mosaic.tif"


def scene_with_gsd(path: Path, gsd: float, source: Path | None = None, factor: int = 1, crs: str = "EPSG:32618") -> Path:
    """The real pixels of ``source`` (default: the demo Landsat subset; every ``factor``-th) written with ``gsd`` metre pixels."""
    import rasterio
    from affine import Affine

    with rasterio.open(source or demo_scene()) as dataset:
        data, profile = dataset.read()[:, ::factor, ::factor], dataset.profile
    transform = Affine(gsd, 0, 500000, 0, -gsd, 4000000)
    profile = {**profile, "width": data.shape[2], "height": data.shape[1], "transform": transform, "crs": crs,
               "compress": "deflate", "photometric": "minisblack"}
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(data)
    return path




def _scale_record(files: list[Path], rgb_gsd: float) -> dict:
    """Footprint and radiometry exactly as training records them (data.geometry / data.radiometry)."""
    headers = [read_header(path) for path in files]
    return {"footprint": training_footprint(headers, rgb_gsd),
            "input_radiometry": input_radiometry([str(path) for path in files], [header.dtype for header in headers])}


def make_run_folder(run_dir: Path, *, arch: str = TEST_ARCH, tile_size: int = TEST_TILE,
                    class_names: list[str] | None = None, seed: int = 0, fit_steps: int = 15,
                    rgb_gsd: float | None = None, per_class: int = 3) -> Path:
    """A run folder with a student as the contract describes, briefly fitted on demo RGB so it predicts several classes.

    With ``rgb_gsd`` (metres per pixel of the demo photos) student.json also records the training footprint
    and input radiometry as training does; without it the run is like one made before footprints existed.
    """
    class_names = class_names or DEMO_CLASSES
    run_dir.mkdir(parents=True, exist_ok=True)
    files = demo_rgb_files(per_class)
    images = [read_image(path, as_rgb=True) for path in files]
    tiles = preprocess_arrays(images, tile_size, None)
    stats = compute_channel_stats(tiles)
    labels = torch.arange(len(DEMO_CLASSES)).repeat_interleave(per_class) % len(class_names)
    torch.manual_seed(seed)
    model = build_backbone(arch, 3, len(class_names))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    inputs = stats.normalise(tiles)
    with one_torch_thread():
        for _ in range(fit_steps):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(inputs), labels).backward()
            optimiser.step()
    model.eval()
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(run_dir / "student.safetensors"))
    (run_dir / "student.json").write_text(json.dumps({
        "arch": arch, "in_channels": 3, "num_classes": len(class_names), "class_names": class_names,
        "tile_size": tile_size, "band_names": ["R", "G", "B"], "channel_stats": stats.to_dict(),
        "final_metrics": {"test_oa": 0.5, "test_f1": 0.4}, "config_hash": "0123456789abcdef",
        "engine_version": __version__, "created": "2026-11-22T00:00:00+00:00",
        **(_scale_record(files, rgb_gsd) if rgb_gsd else {}),
    }, indent=2))
    return run_dir


def make_scale_bundle(folder: Path):
    """A bundle with a recorded footprint (demo photos at 0.3 m) and radiometry, fitted on 10 demo images per class
    so that it tells several classes apart (radiometry and assessment tests need a model whose answers move)."""
    from sembridge_engine.bundle import load_bundle
    from sembridge_engine.training.outputs import export_bundle

    run = make_run_folder(folder / "run", rgb_gsd=0.3, per_class=10, fit_steps=40)
    return load_bundle(export_bundle(run, check_onnx=False))
