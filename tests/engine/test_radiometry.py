"""Radiometry that matches training: real scenes re-encoded to other dtypes label like the originals with
``auto``, differently with ``none``; the mapping and its sample are recorded; sampling reads are bounded."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sembridge_engine.labelling.options import LabelOptions
from sembridge_engine.labelling.radiometry import plan_radiometry
from sembridge_engine.labelling.scene import label_scene, plan_scene

from .labelling_fixtures import demo_mosaic, scene_with_gsd
from .labelling_fixtures import single_torch_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("single_torch_thread")
GSD = 1.2  # the demo Landsat pixels declared at 1.2 m: 64-px windows for the 76.8 m footprint


@pytest.fixture(scope="module")
def landsat(tmp_path_factory) -> tuple[Path, np.ndarray, dict]:
    path = scene_with_gsd(tmp_path_factory.mktemp("radiometry") / "landsat.tif", GSD)
    with rasterio.open(path) as dataset:
        return path, dataset.read(), dataset.profile


def _copy(path: Path, data: np.ndarray, profile: dict, **changes) -> Path:
    with rasterio.open(path, "w", **{**profile, "dtype": str(data.dtype), **changes}) as dataset:
        dataset.write(data)
    return path


def _label(bundle, scene: Path, out: Path, mode: str) -> tuple[np.ndarray, dict]:
    result = label_scene(bundle, scene, out, LabelOptions(device="cpu", radiometry=mode, polygons=False, preview=False))
    with rasterio.open(result.classes) as dataset:
        return dataset.read(1), json.loads(result.summary.read_text())


def test_uint16_copy_labels_like_the_original_with_auto_and_differently_with_none(scale_bundle, landsat, tmp_path):
    path, data, profile = landsat
    nodata = (data == 0).all(axis=0)
    reflectance = np.where(nodata, 0, data.astype(np.uint16) * 100 + 1000).astype(np.uint16)  # 12-bit-sensor-like DN
    copy = _copy(tmp_path / "uint16.tif", reflectance, profile)
    original, summary = _label(scale_bundle, path, tmp_path / "original", "auto")
    valid = original != 255
    assert summary["radiometry"]["applied"] == "percentile"  # darker than the aerial photos: mapped too
    assert len(np.unique(original[valid])) >= 3, "the test model must tell classes apart for this test to mean anything"
    agreement = {}
    for mode in ("auto", "none", "dtype"):
        classes, copied = _label(scale_bundle, copy, tmp_path / mode, mode)
        assert np.array_equal(classes == 255, ~valid)
        agreement[mode] = float((classes[valid] == original[valid]).mean())
        radiometry = copied["radiometry"]
        assert radiometry["mode"] == mode and radiometry["scene_dtype"] == "uint16"
    assert agreement["auto"] >= 0.95, agreement
    assert agreement["none"] < 0.8, agreement
    mapped = _label(scale_bundle, copy, tmp_path / "again", "auto")[1]["radiometry"]
    assert mapped["applied"] == "percentile" and mapped["training_dtype"] == "uint8" and mapped["sample_pixels"] > 10_000
    scene_low, scene_high = np.array(mapped["scene_percentiles"]).T
    original_low, original_high = np.array(summary["radiometry"]["scene_percentiles"]).T
    np.testing.assert_allclose(scene_low, original_low * 100 + 1000, rtol=1e-6)
    np.testing.assert_allclose(scene_high, original_high * 100 + 1000, rtol=1e-6)
    np.testing.assert_allclose(np.array(mapped["gain"]) * 100, summary["radiometry"]["gain"], rtol=1e-6)


def test_float_copy_of_8bit_pixels_is_mapped_not_taken_as_reflectance(scale_bundle, landsat, tmp_path):
    path, data, profile = landsat
    floating = _copy(tmp_path / "float.tif", data.astype(np.float32), profile)
    original = _label(scale_bundle, path, tmp_path / "original", "auto")[0]
    classes, summary = _label(scale_bundle, floating, tmp_path / "float", "auto")
    valid = original != 255
    assert summary["radiometry"]["applied"] == "percentile"
    assert (classes[valid] == original[valid]).mean() >= 0.95


def test_scene_like_the_training_photos_is_left_as_it_is(scale_bundle):
    plan = plan_scene(scale_bundle, demo_mosaic(), LabelOptions(device="cpu"))
    assert plan.radiometry.applied == "none" and "same dtype and value range" in plan.radiometry.reason
    assert "radiometry auto: values used as they are" in plan.lines()[1]


def test_dtype_mode_maps_the_full_ranges_and_old_bundles_warn():
    training = {"source_dtype": "uint8", "percentiles": [1.0, 50.0, 99.0], "values": [[2, 100, 200]] * 3}
    mapping = plan_radiometry("dtype", training, "uint16")
    assert mapping.gain == (255 / 65535,) * 3 and mapping.offset == (0.0,) * 3
    np.testing.assert_allclose(mapping.apply(np.full((3, 2, 2), 65535, np.uint16)), 1.0, rtol=1e-6)  # 255 / 255
    old = plan_radiometry("auto", None, "uint16")
    assert old.applied == "none" and "no training radiometry" in old.warning
    with pytest.raises(ValueError, match="radiometry must be one of auto, none, dtype"):
        plan_radiometry("histogram", training, "uint8")


def test_percentile_sampling_reads_small_windows_whatever_the_scene_size(scale_bundle, landsat, tmp_path, monkeypatch):
    path, data, profile = landsat
    big = _copy(tmp_path / "big.tif", np.tile(data, (1, 4, 4)), profile, width=data.shape[2] * 4, height=data.shape[1] * 4,
                tiled=True, blockxsize=256, blockysize=256)
    from sembridge_engine.labelling.options import LabelOptions as Options
    from sembridge_engine.labelling.source import SAMPLE_GRID, SAMPLE_WINDOW, open_source

    source = open_source(big, scale_bundle, Options(radiometry="none"))
    reads: list[tuple[int, int]] = []
    original = source.read
    monkeypatch.setattr(source, "read", lambda window=None, **kw: reads.append((window.height, window.width)) or original(window, **kw))
    with source.dataset:
        samples = source.sample_pixels()
    assert len(reads) == SAMPLE_GRID ** 2 and max(h * w for h, w in reads) == SAMPLE_WINDOW ** 2
    assert samples.shape[0] == 3 and 0 < samples.shape[1] <= SAMPLE_GRID ** 2 * SAMPLE_WINDOW ** 2
    assert not (samples == 0).all(axis=0).any()  # nodata pixels are not sampled
