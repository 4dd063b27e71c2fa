"""Class discovery on real-format folders, with every kind of bad input named by path."""
import os

import pytest

from sembridge_engine.data.discovery import (
    align_classes,
    discover_ms_archive,
    discover_rgb_folder,
    remap_records,
)
from sembridge_engine.events import CancelToken, Cancelled
from resources import demo_project


def _problems_by_path(index):
    return {problem.path: problem.message for problem in index.problems}


def test_demo_archives_discovered():
    ms = discover_ms_archive(demo_project() / "ms")
    rgb = discover_rgb_folder(demo_project() / "rgb")
    assert len(ms.classes) == 6 and set(ms.counts().values()) == {20}
    assert set(rgb.counts().values()) == {30}
    assert ms.problems == [] and rgb.problems == []
    assert not ms.multi_label and all(len(record.labels) == 1 for record in ms.records)


def test_missing_root_raises_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        discover_ms_archive(missing)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        discover_rgb_folder(missing)


def test_file_system_root_is_refused_before_any_walk():
    with pytest.raises(ValueError, match="root of a file system"):
        discover_ms_archive("/")
    with pytest.raises(ValueError, match="root of a file system"):
        discover_rgb_folder("/")


def test_folder_without_images_two_levels_down_is_refused(tmp_path, data_ms_archive):
    """A half-typed path such as the parent of an archive is not walked as if it were one."""
    with pytest.raises(ValueError, match="none of its sub-folders holds image files"):
        discover_ms_archive(data_ms_archive.parent)  # holds ms/<Class>/*.tif: images three levels down
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not an imagery folder"):
        discover_rgb_folder(tmp_path / "empty")


def test_cancel_stops_discovery(data_ms_archive):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        discover_ms_archive(data_ms_archive, cancel=token)
    assert discover_ms_archive(data_ms_archive, cancel=CancelToken()).classes == ["AnnualCrop", "Forest", "River"]


def test_junk_files_empty_class_and_hidden_files(data_ms_archive):
    forest = data_ms_archive / "Forest"
    (forest / "notes.txt").write_text("field notes")
    (forest / "zero.tif").touch()
    (forest / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (forest / "Thumbs.db").write_bytes(b"\0" * 8)
    (data_ms_archive / "Pasture").mkdir()

    index = discover_ms_archive(data_ms_archive)
    problems = _problems_by_path(index)
    assert index.classes == ["AnnualCrop", "Forest", "River"]
    assert index.counts() == {"AnnualCrop": 4, "Forest": 4, "River": 4}
    assert "not an image file" in problems[str(forest / "notes.txt")]
    assert "empty file (0 bytes)" in problems[str(forest / "zero.tif")]
    assert "empty class folder" in problems[str(data_ms_archive / "Pasture")]
    assert not any(".DS_Store" in path or "Thumbs.db" in path for path in problems)
    assert len(index.problems) == 3


def test_symlink_loops_are_reported_not_followed(data_ms_archive):
    forest = data_ms_archive / "Forest"
    os.symlink(forest, forest / "loop")
    os.symlink(data_ms_archive, forest / "back_to_root")
    index = discover_ms_archive(data_ms_archive)
    problems = _problems_by_path(index)
    assert index.counts() == {"AnnualCrop": 4, "Forest": 4, "River": 4}
    assert "symlink loop" in problems[str(forest / "loop")]
    assert "symlink loop" in problems[str(forest / "back_to_root")]


def test_unreadable_subfolder_is_a_problem(data_ms_archive, monkeypatch):
    locked = data_ms_archive / "Forest" / "locked"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    index = discover_ms_archive(data_ms_archive)
    assert "Permission denied" in _problems_by_path(index)[str(locked)]
    assert index.counts()["Forest"] == 4


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied_class_folder(data_ms_archive):
    river = data_ms_archive / "River"
    river.chmod(0)
    try:
        index = discover_ms_archive(data_ms_archive)
    finally:
        river.chmod(0o755)
    assert "permission denied" in _problems_by_path(index)[str(river)]
    assert "River" not in index.classes


def test_csv_manifest_multi_label(data_ms_archive):
    tiles = sorted(data_ms_archive.rglob("*.tif"))
    manifest = data_ms_archive / "labels.csv"
    manifest.write_text(
        "path,labels\n"
        f"{tiles[0].relative_to(data_ms_archive)},Crop;Water\n"
        f"{tiles[1].relative_to(data_ms_archive)},Crop|Urban\n"
        f"{tiles[2].relative_to(data_ms_archive)},Water\n"
        "missing/tile.tif,Water\n"
    )
    index = discover_ms_archive(manifest)
    assert index.multi_label
    assert index.classes == ["Crop", "Urban", "Water"]
    assert index.counts() == {"Crop": 2, "Urban": 1, "Water": 2}
    assert index.records[0].labels == ("Crop", "Water")
    assert "not found" in _problems_by_path(index)[str(data_ms_archive / "missing" / "tile.tif")]


def test_manifest_without_columns_raises(tmp_path):
    manifest = tmp_path / "bad.csv"
    manifest.write_text("file,class\na.tif,Forest\n")
    with pytest.raises(ValueError, match="bad.csv.*'path' and 'labels'"):
        discover_ms_archive(manifest)


def test_align_classes_many_to_one_and_one_modality_only(data_ms_archive, data_rgb_folder):
    (data_rgb_folder / "River").rename(data_rgb_folder / "river")
    (data_rgb_folder / "AnnualCrop").rename(data_rgb_folder / "denseresidential")
    (data_rgb_folder / "Forest").rename(data_rgb_folder / "mediumresidential")
    (data_ms_archive / "AnnualCrop").rename(data_ms_archive / "Residential")
    ms = discover_ms_archive(data_ms_archive)
    rgb = discover_rgb_folder(data_rgb_folder)
    alignment = align_classes(ms, rgb, {"denseresidential": "Residential", "mediumresidential": "Residential"})
    assert alignment.shared == ["Residential", "River"]
    assert alignment.rgb_to_ms["river"] == "River"
    assert alignment.ms_only == ["Forest"] and alignment.rgb_only == []
    assert [problem.path for problem in alignment.problems] == [str(data_ms_archive / "Forest")]
    assert "no RGB images" in alignment.problems[0].message

    remapped = remap_records(rgb.records, alignment.rgb_to_ms, alignment.shared)
    assert {record.labels for record in remapped} == {("Residential",), ("River",)}
    assert len(remapped) == 9


def test_rgb_class_without_ms_tiles(data_ms_archive, data_rgb_folder):
    (data_rgb_folder / "River").rename(data_rgb_folder / "Beach")
    alignment = align_classes(discover_ms_archive(data_ms_archive), discover_rgb_folder(data_rgb_folder))
    assert alignment.rgb_only == ["Beach"] and alignment.ms_only == ["River"]
    paths = {problem.path for problem in alignment.problems}
    assert str(data_rgb_folder / "Beach") in paths and str(data_ms_archive / "River") in paths


def test_rgb_folder_lists_non_images_and_ignores_hidden(data_rgb_folder):
    (data_rgb_folder / "Forest" / "notes.txt").write_text("notes")
    (data_rgb_folder / "Forest" / ".DS_Store").write_bytes(b"\0")
    (data_rgb_folder / ".hidden_class").mkdir()
    index = discover_rgb_folder(data_rgb_folder)
    assert index.counts() == {"AnnualCrop": 3, "Forest": 3, "River": 3}
    assert [problem.path for problem in index.problems] == [str(data_rgb_folder / "Forest" / "notes.txt")]
