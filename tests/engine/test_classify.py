"""Tile classification with a bundle: real demo images, corrupt files reported per file, CLI outputs."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

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
                                "class_3", "probability_3", "error"]
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
