"""Labelling many scenes in one job, shared among the processes of a torchrun job.

A job is a whole scene or, when there are fewer scenes than processes, a row strip of one
(``LabelOptions.rows``: windows, scale and radiometry stay the whole scene's, so a strip's pixels are
those of the whole-scene run). Every rank plans the same jobs, labels its share with ``label_scene``
and writes their outputs itself, atomically; a strip is labelled with its halo into a work folder and
cropped. A job that fails is reported and the others go on. Rank 0 then joins each striped scene's
rasters with a VRT and writes ``batch_summary.json`` (status, seconds, rank, outputs and error of
every scene and job) and ``batch_index.gpkg``: the footprint of every class raster in EPSG:4326 with
its ``location`` (GDAL's tile-index layout, which QGIS opens as a layer).

``dist`` is a ``sembridge_engine.distributed.Distributed`` under torchrun, else None: one process
needs no torch, so the ONNX labeller keeps running without it.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from sembridge_engine.atomic import atomic_output, write_json_atomic, write_text_atomic
from sembridge_engine.events import Cancelled, CancelToken, EventCallback, ignore_event

from . import writers
from .options import LabelOptions, SceneError
from .scene import label_scene
from .source import open_scene, open_source
from .windows import strip_bounds, strip_halo

if TYPE_CHECKING:
    from sembridge_engine.distributed import Distributed

STRIP_FOLDER = ".strips"
SUMMARY_NAME = "batch_summary.json"
INDEX_NAME = "batch_index.gpkg"
INDEX_LAYER = "class_rasters"
STRIPPED_OUTPUTS = ("classes", "confidence", "probabilities")
RESULT_OUTPUTS = ("classes", "style", "confidence", "probabilities", "polygons", "preview", "summary", "manifest")
GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "float32": "Float32"}
STATUS_ORDER = ("failed", "cancelled", "pending", "finished")   # a scene takes the first status any of its jobs has


@dataclass(frozen=True)
class LabelJob:
    """A whole scene, or rows ``rows`` (end excluded) of its labelled extent, labelled from row ``halo_top`` with the
    windows reaching into them; ``pixels`` weighs the job when jobs are shared out."""

    scene: str
    rows: tuple[int, int] | None = None
    halo_top: int = 0
    pixels: int = 0

    @property
    def name(self) -> str:
        stem = Path(self.scene).stem
        return stem if self.rows is None else f"{stem}_rows{self.rows[0]}-{self.rows[1]}"


@dataclass
class JobRecord:
    scene: str
    name: str
    rows: list[int] | None
    rank: int
    status: str = "pending"
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    error: str = ""


def _scene_pixels(scene: str) -> int:
    """Width x height from the header (0 when unreadable: the job then fails and is reported like any other)."""
    try:
        with open_scene(Path(scene)) as dataset:
            return dataset.width * dataset.height
    except (SceneError, OSError):
        return 0


def plan_jobs(bundle, scenes: Sequence[str | Path], options: LabelOptions, workers: int) -> list[LabelJob]:
    """Whole scenes, or each scene cut into row strips when there are fewer scenes than ``workers``."""
    if not scenes:
        raise SceneError("no scenes to label")
    stems = [Path(scene).stem for scene in scenes]
    clashes = sorted({stem for stem in stems if stems.count(stem) > 1})
    if clashes:
        raise SceneError(f"several scenes are named {', '.join(clashes)}: their outputs would overwrite each other; "
                         "rename them or label them into different folders")
    strips = math.ceil(workers / len(scenes))
    jobs = []
    for scene in map(str, scenes):
        if strips == 1:
            jobs.append(LabelJob(scene, pixels=_scene_pixels(scene)))
            continue
        try:
            source = open_source(Path(scene), bundle, options)
        except (SceneError, OSError):
            jobs.append(LabelJob(scene))  # labelled (and reported as failed) like any other job
            continue
        with source.dataset:
            layout = source.layout
        if layout.height <= layout.window_height:
            jobs.append(LabelJob(scene, pixels=layout.width * layout.height))
            continue
        for rows in strip_bounds(layout, strips):
            top, bottom = strip_halo(layout, *rows)
            jobs.append(LabelJob(scene, rows, top, layout.width * (bottom - top)))
    return jobs


def assign(jobs: Sequence[LabelJob], workers: int) -> list[list[LabelJob]]:
    """Jobs per rank, largest first to the least loaded rank (the same answer on every rank)."""
    shares: list[list[LabelJob]] = [[] for _ in range(workers)]
    loads = [0] * workers
    for job in sorted(jobs, key=lambda job: -job.pixels):
        rank = loads.index(min(loads))
        shares[rank].append(job)
        loads[rank] += job.pixels
    return shares


def _crop_rows(source_path: Path, target: Path, first: int, rows: int) -> None:
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


def _label_job(bundle, job: LabelJob, out_dir: Path, options: LabelOptions, callback, cancel) -> dict[str, str]:
    """Label one job; its outputs by kind (a strip's rasters are cropped from its halo run in a work folder)."""
    if job.rows is None:
        result = label_scene(bundle, job.scene, out_dir, options, callback=callback, cancel=cancel)
        return {key: str(getattr(result, key)) for key in RESULT_OUTPUTS if getattr(result, key) is not None}
    work = out_dir / STRIP_FOLDER / job.name
    try:
        strip = options.with_changes(rows=job.rows, polygons=False, preview=False)
        result = label_scene(bundle, job.scene, work, strip, callback=callback, cancel=cancel)
        outputs = {}
        for key in STRIPPED_OUTPUTS:
            path = getattr(result, key)
            if path is not None:
                outputs[key] = str(out_dir / f"{job.name}_{key}.tif")
                _crop_rows(path, Path(outputs[key]), job.rows[0] - job.halo_top, job.rows[1] - job.rows[0])
        # QGIS styles a layer with the .qml of the same name: this one fits the scene's class VRT.
        outputs["style"] = str(out_dir / f"{Path(job.scene).stem}_classes.qml")
        write_text_atomic(Path(outputs["style"]), result.style.read_text(encoding="utf-8"))
        return outputs
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_jobs(bundle, jobs: Sequence[LabelJob], out_dir: Path, options: LabelOptions, rank: int = 0, *,
             callback: EventCallback = ignore_event, cancel: CancelToken | None = None,
             report: Callable[[JobRecord], None] = lambda record: None) -> list[JobRecord]:
    """Label ``jobs`` one after another; a failure is recorded and the next job starts, a cancel ends the share."""
    records = []
    for job in jobs:
        record = JobRecord(job.scene, job.name, list(job.rows) if job.rows else None, rank)
        records.append(record)
        if cancel is not None and cancel.cancelled:
            record.status = "cancelled"
            continue
        started = time.perf_counter()
        try:
            record.outputs = _label_job(bundle, job, Path(out_dir), options, callback, cancel)
            record.status = "finished"
        except Cancelled:
            record.status = "cancelled"
        except Exception as error:  # one bad scene must not stop the batch: it is reported instead
            record.status, record.error = "failed", f"{type(error).__name__}: {error}"
        record.seconds = round(time.perf_counter() - started, 3)
        report(record)
    return records


def _vrt(target: Path, parts: list[tuple[Path, int]], height: int) -> None:
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


def _class_statistics(bundle, classes: Path, confidence: Path, block: int) -> tuple[np.ndarray, list[float | None]]:
    """Pixels and mean confidence per class of joined rasters (what label_scene's writer counts as it goes)."""
    import rasterio
    from rasterio.windows import Window

    count = bundle.num_classes
    pixels, confidence_sum = np.zeros(count, dtype=np.int64), np.zeros(count, dtype=np.float64)
    with rasterio.open(classes) as class_raster, rasterio.open(confidence) as confidence_raster:
        for top in range(0, class_raster.height, block):
            window = Window(0, top, class_raster.width, min(block, class_raster.height - top))
            labels = class_raster.read(1, window=window)
            valid = labels != class_raster.nodata
            pixels += np.bincount(labels[valid], minlength=count)
            confidence_sum += np.bincount(labels[valid], weights=confidence_raster.read(1, window=window)[valid], minlength=count)
    return pixels, [float(total / number) if number else None for total, number in zip(confidence_sum, pixels)]


def _joined_maps(bundle, scene: str, outputs: dict[str, str], out_dir: Path, options: LabelOptions) -> None:
    """A striped scene's class polygons and preview, from its joined rasters, as label_scene draws a whole scene's."""
    stem, classes = Path(scene).stem, Path(outputs["classes"])
    pixels, mean_confidence = _class_statistics(bundle, classes, Path(outputs["confidence"]), options.block)
    if options.polygons:
        outputs["polygons"] = str(out_dir / f"{stem}_classes.gpkg")
        with atomic_output(Path(outputs["polygons"])) as temporary:
            writers.write_polygons(temporary, classes, bundle.class_names, mean_confidence, options.block)
    if options.preview:
        outputs["preview"] = str(out_dir / f"{stem}_preview.png")
        shares = (pixels / max(int(pixels.sum()), 1)).tolist()
        source = open_source(Path(scene), bundle, options.with_changes(rows=None))
        with source.dataset, atomic_output(Path(outputs["preview"])) as temporary:
            writers.write_preview(temporary, source, classes, bundle.class_names, bundle.colours, shares, block=options.block)


def _join_strips(bundle, scene: str, records: Sequence[JobRecord], outputs: dict[str, str], out_dir: Path,
                 options: LabelOptions) -> None:
    """A striped scene's VRTs over its strip rasters, then its polygons and preview (``outputs`` gets their paths)."""
    stem, height = Path(scene).stem, records[-1].rows[1]
    for key in STRIPPED_OUTPUTS:
        if key in records[0].outputs:
            outputs[key] = str(out_dir / f"{stem}_{key}.vrt")
            _vrt(Path(outputs[key]), [(Path(record.outputs[key]), record.rows[0]) for record in records], height)
    outputs["style"] = records[0].outputs["style"]
    _joined_maps(bundle, scene, outputs, out_dir, options)


def _scene_results(bundle, jobs: Sequence[LabelJob], records: Sequence[JobRecord], out_dir: Path,
                   options: LabelOptions) -> list[dict]:
    """Per scene: status, seconds, errors, its jobs and its outputs (a striped scene's VRTs, polygons and preview,
    written here)."""
    scenes = []
    for scene in dict.fromkeys(job.scene for job in jobs):
        mine = [record for record in records if record.scene == scene]
        statuses = {record.status for record in mine}
        status = next(state for state in STATUS_ORDER if state in statuses)
        outputs = dict(mine[0].outputs) if len(mine) == 1 else {}
        errors = [record.error for record in mine if record.error]
        if len(mine) > 1 and status == "finished":
            try:
                _join_strips(bundle, scene, mine, outputs, out_dir, options)
            except Exception as error:  # reported like a failed job: the summary and the other scenes still get written
                status = "failed"
                errors.append(f"joining the strips: {type(error).__name__}: {error}")
        scenes.append({"scene": scene, "status": status, "seconds": round(sum(record.seconds for record in mine), 3),
                       "errors": errors, "outputs": outputs, "jobs": [asdict(record) for record in mine]})
    return scenes


def write_index(target: Path, scenes: list[dict]) -> bool:
    """GeoPackage of the footprints (EPSG:4326) of every finished, georeferenced class raster; False when none."""
    import geopandas
    import rasterio
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping, shape

    rows = []
    for scene in scenes:
        if scene["status"] != "finished":
            continue
        location = str(Path(scene["outputs"]["classes"]).resolve())
        with rasterio.open(location) as raster:
            if raster.crs is None:
                continue
            footprint = transform_geom(raster.crs, "EPSG:4326", mapping(box(*raster.bounds)))
            rows.append({"location": location, "scene": scene["scene"], "crs": raster.crs.to_string(),
                         "geometry": shape(footprint)})
    if not rows:
        return False
    with atomic_output(target) as temporary:
        geopandas.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326").to_file(temporary, driver="GPKG", layer=INDEX_LAYER)
    return True


def write_batch_outputs(bundle, jobs: Sequence[LabelJob], records: Sequence[JobRecord], out_dir: Path,
                        options: LabelOptions, processes: int, seconds: float) -> dict:
    """Rank 0's part once every job is done: the VRTs, polygons and previews of striped scenes, the index and the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    order = {job.name: position for position, job in enumerate(jobs)}
    records = sorted(records, key=lambda record: order[record.name])
    scenes = _scene_results(bundle, jobs, records, out_dir, options)
    index = out_dir / INDEX_NAME
    summary = {"model": str(bundle.path), "out": str(out_dir), "processes": processes, "seconds": round(seconds, 3),
               "scenes": scenes, "index": str(index) if write_index(index, scenes) else None}
    write_json_atomic(out_dir / SUMMARY_NAME, summary)
    return summary


def label_scenes(bundle, scenes: Sequence[str | Path], out_dir, options: LabelOptions | None = None, *,
                 dist: Distributed | None = None, callback: EventCallback = ignore_event,
                 cancel: CancelToken | None = None, report: Callable[[JobRecord], None] = lambda record: None) -> dict:
    """Label ``scenes`` into ``out_dir``: this rank's share of the jobs, then (rank 0) the VRTs, the batch summary
    and the index. Returns the batch summary on every rank; ``report(record)`` is called after each own job."""
    started = time.perf_counter()
    options, out_dir = options or LabelOptions(), Path(out_dir)
    rank, world_size = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    jobs = plan_jobs(bundle, scenes, options, world_size)
    records = run_jobs(bundle, assign(jobs, world_size)[rank], out_dir, options, rank,
                       callback=callback, cancel=cancel, report=report)
    mine = [asdict(record) for record in records]
    shares = dist.gather_json(mine) if dist is not None else [mine]
    summary = None
    if rank == 0:
        gathered = [JobRecord(**item) for share in shares for item in share]
        summary = write_batch_outputs(bundle, jobs, gathered, out_dir, options, world_size, time.perf_counter() - started)
    return dist.broadcast_json(summary) if dist is not None else summary
