"""Tile classification with a bundle: real demo images, corrupt files reported per file, CLI outputs."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sembridge_engine.events import BatchProgress, CancelToken, Cancelled
from sembridge_engine.bundle import load_bundle
from sembridge_engine.training.outputs import export_bundle
from sembridge_engine.labelling.classify import classify_files

from .labelling_fixtures import DEMO_CLASSES, demo_rgb_files, make_run_folder
from .labelling_fixtures import single_torch_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory) -> Path:
    return export_bundle(make_run_folder(tmp_path_factory.mktemp("classify") / "run"), check_onnx=False)


@pytest.fixture(scope="module")
def bundle(bundle_path):
    return load_bundle(bundle_path)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Real demo images (TIFF, PNG, JPEG of several sizes) in nested folders, plus three broken files."""
    root = tmp_path / "images"
    for index, path in enumerate(demo_rgb_files(2)):
        target = root / path.parent.name / ("deeper" if index % 2 else "") / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    (root / "Forest" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "Forest" / "empty.jpg").write_bytes(b"")
    truncated = demo_rgb_files(1)[0].read_bytes()
    (root / "River" / "truncated.tif").write_bytes(truncated[: len(truncated) // 3])
    return root


def test_classify_folder_gives_top_k_and_reports_bad_files_without_stopping(bundle, image_folder):
    events = []
    results = classify_files(bundle, [image_folder], top_k=3, batch_size=4, device="cpu", callback=events.append)
    assert len(results) == 12 + 3
    failed = {Path(result.path).name: result.error for result in results if result.error}
    assert set(failed) == {"broken.png", "empty.jpg", "truncated.tif"}
    assert "empty file" in failed["empty.jpg"]
    good = [result for result in results if not result.error]
    assert len(good) == 12
    for result in good:
        assert len(result.top) == 3
        assert {name for name, _ in result.top} <= set(DEMO_CLASSES)
        probabilities = [probability for _, probability in result.top]
        assert probabilities == sorted(probabilities, reverse=True)
        assert all(0 < probability <= 1 for probability in probabilities) and sum(probabilities) <= 1 + 1e-6
    progress = [event for event in events if isinstance(event, BatchProgress)]
    assert [event.done for event in progress] == [4, 8, 12, 15] and progress[-1].total == 15


def test_classify_matches_explicit_files_and_top_k_is_capped(bundle):
    files = demo_rgb_files(1)
    by_file = classify_files(bundle, files, top_k=10, device="cpu")
    assert [result.path for result in by_file] == [str(path) for path in files]
    assert all(len(result.top) == len(DEMO_CLASSES) for result in by_file)
    assert all(abs(sum(probability for _, probability in result.top) - 1) < 1e-5 for result in by_file)
    single = classify_files(bundle, files[2:3], top_k=1, device="cpu")
    assert single[0].top[0][0] == by_file[2].top[0][0]
    assert single[0].top[0][1] == pytest.approx(by_file[2].top[0][1], abs=1e-5)


def test_classify_can_be_cancelled(bundle):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        classify_files(bundle, demo_rgb_files(1), device="cpu", cancel=token)


def test_classify_command_json_and_csv(bundle_path, image_folder, tmp_path, capsys):
    from sembridge_engine.cli import main

    assert main(["classify", "--model", str(bundle_path), str(image_folder / "Forest"), "--top-k", "2", "--json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert len(rows) == 4 and sum(1 for row in rows if row["error"]) == 2
    assert all(len(row["top"]) == 2 for row in rows if not row["error"])
    assert "skipped" in captured.err and "broken.png" in captured.err

    table = tmp_path / "out.csv"
    assert main(["classify", "--model", str(bundle_path), str(image_folder), "--csv", str(table)]) == 0
    with table.open() as handle:
        records = list(csv.DictReader(handle))
    assert list(records[0]) == ["path", "predicted_class", "confidence", "class_2", "probability_2",
                                "class_3", "probability_3", "error", "warning"]
    assert len(records) == 15 and len([record for record in records if record["predicted_class"]]) == 12
    assert {record["predicted_class"] for record in records if record["predicted_class"]} <= set(DEMO_CLASSES)
    assert {Path(record["path"]).name for record in records if record["error"]} == {"broken.png", "empty.jpg", "truncated.tif"}
    for record in records:
        if record["predicted_class"]:
            assert float(record["confidence"]) >= float(record["probability_2"]) >= float(record["probability_3"]) > 0

    assert main(["classify", "--model", str(bundle_path), str(image_folder), "--csv", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err
    assert main(["classify", "--model", str(bundle_path), str(image_folder), "--csv", str(tmp_path / "no" / "x.csv")]) == 1
    assert "does not exist" in capsys.readouterr().err


def _georeferenced_crop(path: Path, gsd: float, size: int, dtype=None) -> Path:
    """A size x size crop of the real demo mosaic (0.3 m photos) written as a GeoTIFF with ``gsd`` metre pixels."""
    from affine import Affine

    from .labelling_fixtures import demo_mosaic

    with rasterio.open(demo_mosaic()) as source:
        pixels = source.read(window=rasterio.windows.Window(0, 0, size, size))
    if dtype is not None:
        pixels = pixels.astype(dtype) * 100 + 1000
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype=str(pixels.dtype),
                       crs="EPSG:32610", transform=Affine(gsd, 0, 720000, 0, -gsd, 4132000)) as dataset:
        dataset.write(pixels)
    return path


def test_georeferenced_tiles_are_classified_at_the_training_footprint(scale_bundle, tmp_path):
    from sembridge_engine.labelling.classify import tile_windows
    from sembridge_engine.labelling.predictor import make_predictor

    three_by_three = _georeferenced_crop(tmp_path / "blocks.tif", 0.3, 768)  # 3 x 3 mosaic blocks, one footprint each
    windows, warning = tile_windows(scale_bundle, three_by_three)
    assert len(windows) == 9 and windows[0].shape == (3, 256, 256) and warning is None
    expected = make_predictor(scale_bundle, "cpu").predict(windows).mean(axis=0)
    result = classify_files(scale_bundle, [three_by_three], top_k=len(DEMO_CLASSES), device="cpu")[0]
    assert dict(result.top) == pytest.approx(dict(zip(scale_bundle.class_names, expected.tolist())), abs=1e-5)
    # The same pixels declared at 0.1 m: one footprint is the whole tile, classified whole.
    whole, _ = tile_windows(scale_bundle, _georeferenced_crop(tmp_path / "fine.tif", 0.1, 768))
    assert len(whole) == 1 and whole[0].shape == (3, 768, 768)
    # At 10 m the tile is far coarser than the training photos: classified whole, with labelling's warning.
    coarse = classify_files(scale_bundle, [_georeferenced_crop(tmp_path / "coarse.tif", 10.0, 256)], device="cpu")[0]
    assert coarse.top and "far coarser than the training data" in coarse.warning
    # uint16 and float32 copies of the same pixels: both mapped onto the training radiometry by the labelling's
    # function, so they get the same answer; with radiometry none the uint16 copy is read as reflectance.
    copies = [_georeferenced_crop(tmp_path / "u16.tif", 0.3, 768, np.uint16), _georeferenced_crop(tmp_path / "f32.tif", 0.3, 768, np.float32)]
    mapped = classify_files(scale_bundle, copies, top_k=len(DEMO_CLASSES), device="cpu")
    assert dict(mapped[0].top) == pytest.approx(dict(mapped[1].top), abs=1e-4)
    assert "uint16 mapped onto the training uint8 range" in mapped[0].warning  # never silently
    assert "float32 mapped onto the training uint8 range" in mapped[1].warning
    raw = classify_files(scale_bundle, copies[:1], top_k=len(DEMO_CLASSES), device="cpu", radiometry="none")[0]
    assert dict(raw.top) != pytest.approx(dict(mapped[0].top), abs=1e-2)


def test_a_georeferenced_file_of_many_footprints_is_sent_to_label(scale_bundle, tmp_path):
    many = _georeferenced_crop(tmp_path / "many.tif", 1.0, 1536)  # 77-px footprints: 20 x 20 of them
    result = classify_files(scale_bundle, [many], device="cpu")[0]
    assert result.top is None and "it is a scene; label it with 'sembridge label'" in result.error
