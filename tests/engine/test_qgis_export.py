"""The QGIS (Deepness) export: metadata keys and values as the plugin reads them, and a real map window run
through the graph the way Deepness prepares it gives the bundle's own class probabilities."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sembridge_engine.bundle import load_bundle
from sembridge_engine.bundle.qgis import deepness_preprocess, export_qgis_onnx
from sembridge_engine.training.outputs import export_bundle

from .labelling_fixtures import DEMO_CLASSES, TEST_TILE, demo_scene, make_run_folder
from .labelling_fixtures import single_torch_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(export_bundle(make_run_folder(tmp_path_factory.mktemp("qgis") / "run"), check_onnx=False))


def _deepness_view(path: Path):
    """What the plugin sees when it opens the file: one input, one output, JSON metadata."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    metadata = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}
    return session, metadata


def test_qgis_model_carries_deepness_metadata_and_segments_a_real_window(bundle, tmp_path):
    import rasterio
    from rasterio.windows import Window

    from sembridge_engine.labelling.predictor import make_predictor

    out = tmp_path / "model_qgis.onnx"
    written = export_qgis_onnx(bundle, out)
    session, metadata = _deepness_view(out)
    assert metadata == written
    assert metadata["model_type"] == "Segmentor"
    assert metadata["class_names"] == {str(index): name for index, name in enumerate(DEMO_CLASSES)}
    assert metadata["tiles_size"] == metadata["tile_size"] == TEST_TILE and metadata["tiles_overlap"] == 50
    assert metadata["standardization_mean"] == pytest.approx(bundle.channel_stats.mean)
    assert metadata["standardization_std"] == pytest.approx(bundle.channel_stats.std)
    assert "resolution" not in metadata  # this bundle does not know its training images' ground resolution
    assert metadata["sembridge_max_abs_prob_diff"] < 1e-4
    (only_input,), (only_output,) = session.get_inputs(), session.get_outputs()
    assert only_input.shape[1:] == [3, TEST_TILE, TEST_TILE]
    assert only_output.shape[1:] == [len(DEMO_CLASSES), TEST_TILE, TEST_TILE]

    with rasterio.open(demo_scene()) as scene:
        windows = np.stack([scene.read([1, 2, 3], window=Window(col, row, TEST_TILE, TEST_TILE))
                            for row, col in ((100, 100), (150, 40), (200, 250))])
    maps = session.run(None, {only_input.name: deepness_preprocess(windows, metadata)})[0]
    expected = make_predictor(bundle, "cpu").predict(windows)
    assert maps.shape == (3, len(DEMO_CLASSES), TEST_TILE, TEST_TILE)
    np.testing.assert_allclose(maps, np.broadcast_to(expected[:, :, None, None], maps.shape), atol=1e-5)


def test_export_command_writes_the_qgis_model_beside_the_bundle(tmp_path, capsys):
    from sembridge_engine.cli import main

    run_dir = make_run_folder(tmp_path / "run", fit_steps=1)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "m.sembridge"), "--no-onnx", "--qgis"]) == 0
    printed = capsys.readouterr().out
    _, metadata = _deepness_view(tmp_path / "m_qgis.onnx")
    assert metadata["class_names"]["5"] == "River" and "m_qgis.onnx" in printed and "QGIS" in printed


def test_a_bundle_with_a_footprint_gives_resolution_and_tiles_of_a_training_image(bundle, tmp_path):
    """UC Merced-like footprint (256 px at 0.3 m): Deepness resamples the map to 30 cm/px and cuts 256 px
    tiles; a real 256 px photo through Deepness' preprocessing gets the bundle's own probabilities."""
    from sembridge_engine.data.readers import read_image
    from sembridge_engine.labelling.predictor import make_predictor

    from .labelling_fixtures import demo_rgb_files

    bundle.metadata["footprint"] = {"metres": 76.8, "gsd_m": 0.3}
    try:
        metadata = export_qgis_onnx(bundle, tmp_path / "m.onnx", tiles_overlap=25)
    finally:
        del bundle.metadata["footprint"]
    assert metadata["resolution"] == pytest.approx(30.0) and metadata["tiles_size"] == 256 and metadata["tiles_overlap"] == 25
    session, _ = _deepness_view(tmp_path / "m.onnx")
    photos = np.stack([read_image(path, as_rgb=True) for path in demo_rgb_files(1)[:2]])
    maps = session.run(None, {"input": deepness_preprocess(photos, metadata)})[0]
    expected = make_predictor(bundle, "cpu").predict(photos)
    assert maps.shape == (2, len(DEMO_CLASSES), 256, 256)
    np.testing.assert_allclose(maps[:, :, 128, 7], expected, atol=1e-5)
    np.testing.assert_allclose(maps.min(axis=(2, 3)), maps.max(axis=(2, 3)))


def test_16_bit_training_data_gets_standardisation_for_deepness_division_by_255(bundle, tmp_path):
    bundle.metadata["input_radiometry"] = {"source_dtype": "uint16"}
    try:
        metadata = export_qgis_onnx(bundle, tmp_path / "m16.onnx")
    finally:
        del bundle.metadata["input_radiometry"]
    factor = 10000 / 255
    assert metadata["standardization_mean"] == pytest.approx([value * factor for value in bundle.channel_stats.mean])
    assert metadata["standardization_std"] == pytest.approx([value * factor for value in bundle.channel_stats.std])
    assert metadata["sembridge_max_abs_prob_diff"] < 1e-4


def test_overlap_outside_a_percentage_is_refused(bundle, tmp_path):
    from sembridge_engine.bundle import BundleError

    with pytest.raises(BundleError, match="percentage"):
        export_qgis_onnx(bundle, tmp_path / "bad.onnx", tiles_overlap=100)
    assert not (tmp_path / "bad.onnx").exists()
