"""A scene labelled in row strips (labelling.batch): each strip's rasters, then the scene's one output set.

A strip job labels its rows with their halo into a work folder and crops them into the scene's staging
folder (``.strips/<scene>.set`` in the output folder) under their final names, with the statistics of
the cropped pixels. Once every strip is done, rank 0 joins them there (VRTs over the strip rasters,
polygons, preview, and ``<scene>_summary.json`` merging the strips') and commits everything as the
scene's output set (output_set.commit_outputs): a later run of the scene, striped or whole, replaces it
as a whole, and a scene whose strips did not all finish leaves its previous set untouched.

The merged summary has a whole-scene summary's fields. Pixel counts, mean confidences and nodata
pixels come from the cropped strips, whose pixels are the whole-scene run's; ``windows`` is the whole
scene's layout, while ``windows_classified`` / ``windows_skipped`` add up the strips' runs, in which the
windows straddling a seam are run by both strips; ``seconds`` adds up the strips' and the join's work.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from sembridge_engine.atomic import atomic_output, write_json_atomic, write_text_atomic

from . import writers
from .options import LabelOptions
from .output_set import commit_outputs, previous_outputs, strip_file_name
from .scene import label_scene
from .source import open_source
from .windows import scene_layout

if TYPE_CHECKING:
    from .batch import JobRecord, LabelJob

STRIP_FOLDER = ".strips"
STRIPPED_OUTPUTS = ("classes", "confidence", "probabilities")
GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "float32": "Float32"}
PIXEL_FIELDS = ("classes", "labelled_pixels", "nodata_pixels")   # a strip summary's counts that include its halo


def staging_folder(out_dir: Path, scene: str | Path) -> Path:
    return Path(out_dir) / STRIP_FOLDER / f"{Path(scene).stem}.set"


def crop_rows(source_path: Path, target: Path, first: int, rows: int) -> None:
    """Rows [first, first + rows) of a raster, georeferenced, with its colour table, descriptions and tags."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(source_path) as source:
        window = Window(0, first, source.width, rows)
        profile = {**source.profile, "height": rows, "transform": source.window_transform(window)}
        with atomic_output(target) as temporary, rasterio.open(temporary, "w", **profile) as out:
            out.write(source.read(window=window))
            out.update_tags(**source.tags())
            for band in range(1, source.count + 1):
                out.set_band_description(band, source.descriptions[band - 1] or "")
            if source.colorinterp[0].name == "palette":
                out.write_colormap(1, source.colormap(1))


def raster_statistics(classes: Path, confidence: Path, num_classes: int, block: int) -> dict:
    """Pixels and confidence sum per class and nodata pixels of a class raster and its confidence raster, read by
    blocks of rows (what label_scene's writer counts as it goes)."""
    import rasterio
    from rasterio.windows import Window

    pixels, confidence_sum = np.zeros(num_classes, dtype=np.int64), np.zeros(num_classes, dtype=np.float64)
    nodata = 0
    with rasterio.open(classes) as class_raster, rasterio.open(confidence) as confidence_raster:
        for top in range(0, class_raster.height, block):
            window = Window(0, top, class_raster.width, min(block, class_raster.height - top))
            labels = class_raster.read(1, window=window)
            valid = labels != class_raster.nodata
            nodata += int(valid.size - valid.sum())
            pixels += np.bincount(labels[valid], minlength=num_classes)
            confidence_sum += np.bincount(labels[valid], weights=confidence_raster.read(1, window=window)[valid],
                                          minlength=num_classes)
    return {"pixels": pixels.tolist(), "confidence_sum": confidence_sum.tolist(), "nodata_pixels": nodata}


def label_strip(bundle, job: LabelJob, out_dir: Path, options: LabelOptions, callback, cancel) -> tuple[dict[str, str], dict]:
    """Label one strip into the scene's staging folder: its outputs by kind, and its summary with the statistics of
    its own rows (``pixels``, ``confidence_sum``, ``nodata_pixels``) in place of its halo run's counts."""
    scene = Path(job.scene)
    previous_outputs(out_dir, scene)  # refuses a folder holding another scene's set before any work
    work, staged = out_dir / STRIP_FOLDER / job.name, staging_folder(out_dir, scene)
    try:
        strip = options.with_changes(rows=job.rows, polygons=False, preview=False)
        result = label_scene(bundle, job.scene, work, strip, callback=callback, cancel=cancel)
        outputs = {}
        for key in STRIPPED_OUTPUTS:
            path = getattr(result, key)
            if path is not None:
                outputs[key] = str(staged / strip_file_name(scene, job.rows, key))
                crop_rows(path, Path(outputs[key]), job.rows[0] - job.halo_top, job.rows[1] - job.rows[0])
        # QGIS styles a layer with the .qml of the same name: this one fits the scene's class VRT.
        outputs["style"] = str(staged / f"{scene.stem}_classes.qml")
        write_text_atomic(Path(outputs["style"]), result.style.read_text(encoding="utf-8"))
        summary = json.loads(result.summary.read_text(encoding="utf-8"))
        statistics = raster_statistics(Path(outputs["classes"]), Path(outputs["confidence"]), bundle.num_classes, options.block)
        return outputs, {**{key: value for key, value in summary.items() if key not in PIXEL_FIELDS}, **statistics}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def merged_summary(bundle, records: Sequence[JobRecord], seconds: float) -> dict:
    """A striped scene's ``_summary.json`` from its strips' (``records`` in row order), with a whole scene's fields."""
    strips = [record.statistics for record in records]
    first, height = strips[0], records[-1].rows[1]
    pixels = np.sum([strip["pixels"] for strip in strips], axis=0)
    confidence_sum = np.sum([strip["confidence_sum"] for strip in strips], axis=0)
    labelled = int(pixels.sum())
    column, row, width, _ = first["window"]
    summary = {key: value for key, value in first.items() if key not in ("pixels", "confidence_sum", "nodata_pixels")}
    summary.update(
        height=height, window=[column, row, width, height],
        windows=scene_layout(first["width"], height, first["tile"], first["stride"]).windows,
        windows_classified=sum(strip["windows_classified"] for strip in strips),
        windows_skipped=sum(strip["windows_skipped"] for strip in strips),
        labelled_pixels=labelled, nodata_pixels=sum(strip["nodata_pixels"] for strip in strips), seconds=round(seconds, 3),
        strips=[{"rows": record.rows, "rank": record.rank, "seconds": record.seconds, "windows": strip["windows"],
                 "windows_classified": strip["windows_classified"], "windows_skipped": strip["windows_skipped"]}
                for record, strip in zip(records, strips)],
        classes=[{"class_id": index, "class_name": name, "colour": colour, "pixels": int(count),
                  "share": float(count) / labelled if labelled else 0.0,
                  "mean_confidence": float(total / count) if count else None}
                 for index, (name, colour, count, total) in enumerate(zip(bundle.class_names, bundle.colours, pixels, confidence_sum))],
    )
    return summary


def write_vrt(target: Path, parts: list[tuple[Path, int]], height: int) -> None:
    """A VRT stacking row strips ((path, first row), same width and georeferencing) into one raster."""
    import xml.etree.ElementTree as ElementTree

    import rasterio
    from affine import Affine

    with rasterio.open(parts[0][0]) as first:
        width, count, dtype, nodata = first.width, first.count, first.dtypes[0], first.nodata
        transform = first.transform @ Affine.translation(0, -parts[0][1])
        palette = first.colormap(1) if first.colorinterp[0].name == "palette" else None
        root = ElementTree.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
        ElementTree.SubElement(root, "SRS").text = first.crs.to_wkt() if first.crs else ""
        ElementTree.SubElement(root, "GeoTransform").text = ", ".join(repr(value) for value in transform.to_gdal())
        descriptions = first.descriptions
    heights = []
    for path, _ in parts:
        with rasterio.open(path) as part:
            heights.append(part.height)
    for band in range(1, count + 1):
        element = ElementTree.SubElement(root, "VRTRasterBand", dataType=GDAL_TYPES[dtype], band=str(band))
        ElementTree.SubElement(element, "Description").text = descriptions[band - 1] or ""
        if nodata is not None:
            ElementTree.SubElement(element, "NoDataValue").text = repr(nodata)
        if palette is not None:
            ElementTree.SubElement(element, "ColorInterp").text = "Palette"
            table = ElementTree.SubElement(element, "ColorTable")
            for index in range(max(palette) + 1):
                red, green, blue, alpha = palette.get(index, (0, 0, 0, 0))
                ElementTree.SubElement(table, "Entry", c1=str(red), c2=str(green), c3=str(blue), c4=str(alpha))
        for (path, row), rows in zip(parts, heights):
            source = ElementTree.SubElement(element, "SimpleSource")
            ElementTree.SubElement(source, "SourceFilename", relativeToVRT="1").text = Path(path).name
            ElementTree.SubElement(source, "SourceBand").text = str(band)
            ElementTree.SubElement(source, "SrcRect", xOff="0", yOff="0", xSize=str(width), ySize=str(rows))
            ElementTree.SubElement(source, "DstRect", xOff="0", yOff=str(row), xSize=str(width), ySize=str(rows))
    write_text_atomic(target, ElementTree.tostring(root, encoding="unicode"))


def commit_striped_scene(bundle, scene: str, records: Sequence[JobRecord], out_dir: Path, options: LabelOptions) -> dict[str, str]:
    """Join a striped scene's finished strips (``records`` in row order) in its staging folder, VRTs, polygons,
    preview and summary, and commit them with the strip rasters as the scene's output set; its outputs by kind
    (the records' outputs are moved to their final paths too)."""
    started = time.perf_counter()
    staged, stem = staging_folder(out_dir, scene), Path(scene).stem
    joined = {key: staged / f"{stem}_{key}.vrt" for key in STRIPPED_OUTPUTS if key in records[0].outputs}
    for key, target in joined.items():
        write_vrt(target, [(Path(record.outputs[key]), record.rows[0]) for record in records], records[-1].rows[1])
    joined["style"] = Path(records[0].outputs["style"])
    summary = merged_summary(bundle, records, sum(record.seconds for record in records))
    mean_confidence = [entry["mean_confidence"] for entry in summary["classes"]]
    if options.polygons:
        joined["polygons"] = staged / f"{stem}_classes.gpkg"
        with atomic_output(joined["polygons"]) as temporary:
            writers.write_polygons(temporary, joined["classes"], bundle.class_names, mean_confidence, options.block)
    if options.preview:
        joined["preview"] = staged / f"{stem}_preview.png"
        source = open_source(Path(scene), bundle, options.with_changes(rows=None))
        with source.dataset, atomic_output(joined["preview"]) as temporary:
            writers.write_preview(temporary, source, joined["classes"], bundle.class_names, bundle.colours,
                                  [entry["share"] for entry in summary["classes"]], block=options.block)
    summary["seconds"] = round(summary["seconds"] + time.perf_counter() - started, 3)
    joined["summary"] = staged / f"{stem}_summary.json"
    write_json_atomic(joined["summary"], summary)
    rasters = [Path(path) for record in records for key, path in record.outputs.items() if key != "style"]
    manifest = commit_outputs(out_dir, Path(scene), {path: out_dir / path.name for path in [*rasters, *joined.values()]})
    for record in records:
        record.outputs = {key: str(out_dir / Path(path).name) for key, path in record.outputs.items()}
    return {**{key: str(out_dir / path.name) for key, path in joined.items()}, "manifest": str(manifest)}
