"""A scene's outputs in a folder are one set: written together, replaced together, never mixed.

Every labelling writes ``<scene>_manifest.json`` listing the files of its set. Labelling the same
scene into the same folder again (with other options: no probabilities, no polygons, ...) replaces
the whole previous set: the manifest first says ``replacing`` (old and new names), the new files are
renamed into place, the old files the new set does not have are deleted, and the manifest then says
``complete``. A crash in between leaves a manifest that still names both sets, so the next run
removes both; a reader trusts a set only when its manifest says ``complete``. A scene labelled in row
strips (labelling.batch) is one set too: its strip rasters, the VRTs joining them and the rest, so a
whole-scene run after a striped one (or the reverse) replaces it like any other. Files named as this
scene's outputs (whole or striped) but missing from its manifest, as older SemBridge versions left them,
are part of the previous set as well. A folder holding the outputs of another scene with the same file
name is refused rather than overwritten.
"""
from __future__ import annotations

import glob
import re
from datetime import datetime, timezone
from pathlib import Path

from sembridge_engine.atomic import remove_quietly, replace_all, write_json_atomic

from .options import LabelOptions, SceneError

OUTPUT_SUFFIXES = {
    "classes": "_classes.tif", "style": "_classes.qml", "confidence": "_confidence.tif",
    "probabilities": "_probabilities.tif", "polygons": "_classes.gpkg", "preview": "_preview.png",
    "summary": "_summary.json",
}
MANIFEST_SUFFIX = "_manifest.json"
STRIPED_SUFFIXES = ("_classes.vrt", "_confidence.vrt", "_probabilities.vrt")   # a striped set's joined rasters
STRIP_NAME = r"_rows\d+-\d+_(classes|confidence|probabilities)\.tif"          # after the scene's stem


def strip_file_name(scene_path: Path, rows: tuple[int, int] | list[int], key: str) -> str:
    """``<scene>_rows<start>-<stop>_<key>.tif``: rows [start, stop) of a striped scene's ``key`` raster."""
    return f"{Path(scene_path).stem}_rows{rows[0]}-{rows[1]}_{key}.tif"


def output_paths(out_dir: Path, scene_path: Path, options: LabelOptions) -> dict[str, Path]:
    """Final paths of the outputs ``options`` asks for, named after the scene."""
    wanted = {"probabilities": options.probabilities, "polygons": options.polygons, "preview": options.preview}
    return {key: out_dir / f"{scene_path.stem}{suffix}" for key, suffix in OUTPUT_SUFFIXES.items() if wanted.get(key, True)}


def manifest_path(out_dir: Path, scene_path: Path) -> Path:
    return out_dir / f"{scene_path.stem}{MANIFEST_SUFFIX}"


def _read_manifest(path: Path) -> dict | None:
    import json

    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None  # unreadable: treated like outputs without a manifest (recognised by name)
    return manifest if isinstance(manifest, dict) else None


def previous_outputs(out_dir: Path, scene_path: Path) -> list[Path]:
    """Files of an earlier labelling of this scene in ``out_dir`` (to be replaced as a whole).

    Raises SceneError when the folder's set for this file name belongs to another scene.
    """
    out_dir, scene = Path(out_dir), str(Path(scene_path).resolve())
    manifest = _read_manifest(manifest_path(out_dir, scene_path)) or {}
    if manifest.get("scene") not in (None, scene):
        raise SceneError(f"{out_dir}: holds the outputs of another scene with the same name ({manifest['scene']}); "
                         f"label {scene_path.name} into another folder, or delete {manifest_path(out_dir, scene_path).name} "
                         "and its files first")
    names = [str(name) for name in [*manifest.get("outputs", []), *manifest.get("previous", [])]]
    names += [f"{scene_path.stem}{suffix}" for suffix in (*OUTPUT_SUFFIXES.values(), *STRIPED_SUFFIXES)]
    if out_dir.is_dir():
        strip = re.compile(re.escape(scene_path.stem) + STRIP_NAME)
        names += sorted(path.name for path in out_dir.glob(f"{glob.escape(scene_path.stem)}_rows*") if strip.fullmatch(path.name))
    return [out_dir / name for name in dict.fromkeys(names) if Path(name).name == name and (out_dir / name).exists()]


def commit_outputs(out_dir: Path, scene_path: Path, moves: dict[Path, Path]) -> Path:
    """Rename the finished temporaries (``{temporary: final}``) into place as the scene's new set, replacing
    the previous set as a whole; returns the manifest's path."""
    manifest = manifest_path(out_dir, scene_path)
    previous = previous_outputs(out_dir, scene_path)
    finals = list(moves.values())
    record = {"scene": str(Path(scene_path).resolve()), "outputs": [path.name for path in finals]}
    write_json_atomic(manifest, {**record, "state": "replacing", "previous": [path.name for path in previous]})
    replace_all(list(moves.items()))
    remove_quietly([path for path in previous if path not in finals])
    write_json_atomic(manifest, {**record, "state": "complete",
                                 "written": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return manifest
