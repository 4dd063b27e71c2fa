"""The torch-free backend: `sembridge classify/label --backend onnx` never imports torch and gives the
torch backend's results (same windowing, accumulation and writers; only the model runtime differs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from resources import demo_project
from sembridge_engine.bundle import BundleError, load_bundle
from sembridge_engine.bundle.format import BundleInfo
from sembridge_engine.labelling.classify import classify_files
from sembridge_engine.labelling.options import LabelOptions
from sembridge_engine.labelling.predictor import make_predictor, onnx_providers, open_bundle
from sembridge_engine.labelling.scene import label_scene
from sembridge_engine.training.outputs import export_bundle

from .labelling_fixtures import DEMO_CLASSES, demo_rgb_files, demo_scene, make_run_folder
from .labelling_fixtures import single_torch_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("single_torch_thread")
ROOT = Path(__file__).resolve().parents[2]
# The child labels the demo Landsat scene with the model's own 32 px windows (nodata border, overlaps)
# and a mosaic of UC Merced photos with 256 px windows (one photo each; the graph is rewritten for that
# size), classifies the demo RGB folder, then reports whether torch, or another module the torch-free
# labeller's build does not carry (installers/build.py LABEL_REQUIREMENTS), was ever imported.
TORCH_FREE_RUN = """
import json, sys
from sembridge_engine.cli import main
model, out, scene, mosaic, folder = sys.argv[1:6]
codes = [main(["label", "--model", model, "--scene", scene, "--out", out + "/landsat", "--backend", "onnx",
               "--stride", "24", "--probabilities", "--no-preview"]),
         main(["label", "--model", model, "--scene", mosaic, "--out", out + "/mosaic", "--backend", "onnx",
               "--tile", "256", "--stride", "128", "--probabilities", "--no-preview"]),
         main(["classify", "--model", model, folder, "--backend", "onnx", "--csv", out + "/tiles.csv"])]
absent = ("torch", "torchvision", "tomli_w", "PySide6", "pyqtgraph", "safetensors", "ot")
print(json.dumps({"codes": codes, "torch": sorted(name for name in sys.modules if name.split(".")[0] in absent)}))
"""


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory) -> Path:
    """A student fitted until it tells the six demo classes apart (fewer steps leave its batch-norm statistics
    unsettled and every photo in one class, which would make agreement trivial)."""
    return export_bundle(make_run_folder(tmp_path_factory.mktemp("onnx") / "run", fit_steps=80))


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory) -> Path:
    """Two rows of three real 256 px UC Merced photos (one per class), georeferenced at 0.3 m."""
    from rasterio.transform import from_origin

    from sembridge_engine.data.readers import read_image

    photos = [read_image(path, as_rgb=True) for path in demo_rgb_files(1)]
    assert all(photo.shape == (3, 256, 256) for photo in photos)
    pixels = np.concatenate([np.concatenate(photos[row * 3:row * 3 + 3], axis=2) for row in range(2)], axis=1)
    path = tmp_path_factory.mktemp("mosaic") / "mosaic.tif"
    with rasterio.open(path, "w", driver="GTiff", width=768, height=512, count=3, dtype="uint8", crs="EPSG:32618",
                       transform=from_origin(500000, 2700000, 0.3, 0.3)) as dataset:
        dataset.write(pixels)
    return path


@pytest.fixture(scope="module")
def torch_free_outputs(bundle_path, mosaic, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("torch_free")
    completed = subprocess.run([sys.executable, "-c", TORCH_FREE_RUN, str(bundle_path), str(out), str(demo_scene()),
                                str(mosaic), str(demo_project() / "rgb")], capture_output=True, text=True, timeout=300, cwd=ROOT,
                               env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report == {"codes": [0, 0, 0], "torch": []}, completed.stderr
    return out


def _band(path: Path, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(band)


@pytest.mark.parametrize("name, tile, stride", [("landsat", None, 24), ("mosaic", 256, 128)])
def test_onnx_labelling_never_imports_torch_and_matches_the_torch_backend(bundle_path, mosaic, torch_free_outputs, tmp_path,
                                                                       name, tile, stride):
    scene = demo_scene() if name == "landsat" else mosaic
    options = LabelOptions(tile=tile, stride=stride, device="cpu", probabilities=True, preview=False)
    torch_result = label_scene(load_bundle(bundle_path), scene, tmp_path, options)
    onnx_dir = torch_free_outputs / name
    torch_classes, onnx_classes = _band(torch_result.classes), _band(onnx_dir / f"{scene.stem}_classes.tif")
    # Same windows and accumulation; ONNX Runtime's kernels (convolution algorithms, summation order) differ
    # from PyTorch's by up to ~2e-5 in probability here,
    # far below any gap between the two best classes, so the class rasters are identical.
    np.testing.assert_array_equal(onnx_classes, torch_classes)
    if name == "mosaic":  # photos of six classes: a map of several classes, so agreement means something
        assert len(np.unique(torch_classes)) >= 3
    np.testing.assert_allclose(_band(onnx_dir / f"{scene.stem}_confidence.tif"), _band(torch_result.confidence), atol=1e-4)
    with rasterio.open(torch_result.probabilities) as expected, rasterio.open(onnx_dir / f"{scene.stem}_probabilities.tif") as got:
        np.testing.assert_allclose(got.read(), expected.read(), atol=1e-4)
    onnx_summary = json.loads((onnx_dir / f"{scene.stem}_summary.json").read_text())
    torch_summary = json.loads(torch_result.summary.read_text())
    assert onnx_summary["device"] == "onnxruntime CPUExecutionProvider" and torch_summary["device"] == "cpu"
    for key in ("tile", "stride", "windows", "windows_classified", "windows_skipped", "labelled_pixels", "nodata_pixels"):
        assert onnx_summary[key] == torch_summary[key], key
    assert [entry["pixels"] for entry in onnx_summary["classes"]] == [entry["pixels"] for entry in torch_summary["classes"]]


def test_onnx_classification_of_the_demo_folder_matches_the_torch_backend(bundle_path, torch_free_outputs):
    """180 UC Merced photos of three sizes (256 x 256, 256 x 251, 256 x 249): one graph per size."""
    import csv

    with (torch_free_outputs / "tiles.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    torch_results = classify_files(load_bundle(bundle_path), [demo_project() / "rgb"], top_k=1, device="cpu")
    assert len(rows) == len(torch_results) == 180
    for row, result in zip(rows, torch_results):
        assert row["path"] == result.path and row["predicted_class"] == result.top[0][0]
        assert float(row["confidence"]) == pytest.approx(result.top[0][1], abs=1e-4)


def test_predictors_agree_on_windows_of_another_dtype(bundle_path):
    """A 16-bit window: both runtimes divide by 10000 as scale_by_dtype does (the ONNX input is rescaled)."""
    torch_predictor = make_predictor(load_bundle(bundle_path), "cpu")
    onnx_predictor = make_predictor(open_bundle(bundle_path, "onnx"), "cpu")
    windows = np.random.default_rng(1).integers(0, 4000, size=(3, 3, 40, 40), dtype=np.uint16)
    np.testing.assert_allclose(onnx_predictor.predict(windows), torch_predictor.predict(windows), atol=1e-5)
    assert onnx_predictor.model_bytes > 0 and torch_predictor.model_bytes > 0


def test_backend_choice_and_clear_errors(bundle_path, tmp_path):
    assert isinstance(open_bundle(bundle_path, "onnx"), BundleInfo) and not hasattr(open_bundle(bundle_path, "onnx"), "model")
    assert not hasattr(open_bundle(bundle_path, "auto"), "model")  # onnxruntime is installed and the bundle has the graph
    assert hasattr(open_bundle(bundle_path, "torch"), "model")
    without_graph = tmp_path / "no_onnx.sembridge"
    with zipfile.ZipFile(bundle_path) as source, zipfile.ZipFile(without_graph, "w") as target:
        for name in ("metadata.json", "weights.safetensors"):
            target.writestr(name, source.read(name))
    assert hasattr(open_bundle(without_graph, "auto"), "model")  # falls back to torch
    with pytest.raises(ValueError, match=r"no_onnx\.sembridge: has no raw-pixel model\.onnx.*--backend torch"):
        make_predictor(open_bundle(without_graph, "onnx"), "cpu")
    with pytest.raises(ValueError, match="unknown inference backend 'tensorrt'"):
        open_bundle(bundle_path, "tensorrt")
    with pytest.raises(BundleError, match="model bundle not found"):
        open_bundle(tmp_path / "missing.sembridge", "onnx")


def test_execution_providers_follow_the_device_and_what_onnxruntime_offers():
    import onnxruntime

    available = onnxruntime.get_available_providers()
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert onnx_providers("auto")[-1] == "CPUExecutionProvider"
    if "CUDAExecutionProvider" not in available:
        with pytest.raises(ValueError, match="needs onnxruntime's CUDAExecutionProvider"):
            onnx_providers("cuda:0")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        onnx_providers("tpu")


def test_the_demo_classes_are_what_both_backends_name(bundle_path):
    assert open_bundle(bundle_path, "onnx").class_names == load_bundle(bundle_path).class_names == DEMO_CLASSES


def test_without_torch_a_bundle_lacking_its_graph_is_a_clear_message(bundle_path, tmp_path, monkeypatch):
    """What the labelling-only build (no torch) says for a bundle it cannot run."""
    without_graph = tmp_path / "old.sembridge"
    with zipfile.ZipFile(bundle_path) as source, zipfile.ZipFile(without_graph, "w") as target:
        for name in ("metadata.json", "weights.safetensors"):
            target.writestr(name, source.read(name))
    monkeypatch.setitem(sys.modules, "sembridge_engine.bundle.model", None)  # importing it now fails as without torch
    with pytest.raises(BundleError, match=r"old\.sembridge: needs PyTorch \(it has no raw-pixel model\.onnx.*re-export"):
        open_bundle(without_graph, "auto")
    assert open_bundle(bundle_path, "auto").class_names == DEMO_CLASSES


def test_the_labelling_only_command_line_offers_classify_and_label_only(capsys):
    from sembridge_engine.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--config", "x.toml"], commands=("classify", "label"))
    assert "invalid choice: 'train'" in capsys.readouterr().err
