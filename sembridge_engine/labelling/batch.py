"""Labelling many scenes in one job, shared among the processes of a torchrun job.

A job is a whole scene or, when there are fewer scenes than processes, a row strip of one
(``LabelOptions.rows``: windows, scale and radiometry stay the whole scene's, so a strip's pixels are
those of the whole-scene run). Every rank plans the same jobs, labels its share with ``label_scene``
and writes their outputs itself, atomically (a whole scene's as its output set; a strip's into its
scene's staging folder, labelling.strips). A job that fails is reported and the others go on. Rank 0
then joins each striped scene's strips with VRTs, writes its summary and commits them as the scene's
output set, and writes ``batch_summary.json`` (status, seconds, rank, outputs and error of every scene
and job) and ``batch_index.gpkg``: the footprint of every class raster in EPSG:4326 with its
``location`` (GDAL's tile-index layout, which QGIS opens as a layer).

A cancel seen by one rank (a signal, its own token) stops every rank: it is posted in torchrun's store
and every rank looks there whenever it checks its token (``RanksCancel``), so all stop within a model
batch, whatever their shares of work; a rank done with its share waits for the others in a barrier that
keeps looking (``Distributed.wait_for_all``), never blocked in a collective. Scenes finished before
the cancel keep their outputs, the others are reported cancelled and leave nothing (a striped scene's
finished strips included), and every rank returns the same summary.

``dist`` is a ``sembridge_engine.distributed.Distributed`` under torchrun, else None: one process
needs no torch, so the ONNX labeller keeps running without it.
"""
from __future__ import annotations

import itertools
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from sembridge_engine.atomic import atomic_output, write_json_atomic
from sembridge_engine.events import Cancelled, CancelToken, EventCallback, ignore_event

from .options import LabelOptions, SceneError
from .scene import label_scene
from .source import open_scene, open_source
from .strips import commit_striped_scene, label_strip, staging_folder
from .windows import strip_bounds, strip_halo

if TYPE_CHECKING:
    from sembridge_engine.distributed import Distributed

SUMMARY_NAME = "batch_summary.json"
INDEX_NAME = "batch_index.gpkg"
INDEX_LAYER = "class_rasters"
RESULT_OUTPUTS = ("classes", "style", "confidence", "probabilities", "polygons", "preview", "summary", "manifest")
STATUS_ORDER = ("failed", "cancelled", "pending", "finished")   # a scene takes the first status any of its jobs has
_BATCHES = itertools.count()   # names each batch's flag and barrier (every rank labels the same batches in order)


class RanksCancel(CancelToken):
    """The cancel token of every rank of a torchrun job: a cancel of this rank's ``local`` token is posted in the
    store, and checking it looks there (at most every ``LOOK_SECONDS``), so every rank sees any rank's cancel."""

    LOOK_SECONDS = 0.2

    def __init__(self, local: CancelToken, dist: Distributed, flag: str) -> None:
        super().__init__()
        self.local, self.dist, self.flag, self._next_look = local, dist, flag, 0.0

    @property
    def cancelled(self) -> bool:
        if not super().cancelled:
            if self.local.cancelled:
                self.dist.raise_flag(self.flag)
                self.cancel()
            elif time.monotonic() >= self._next_look:
                self._next_look = time.monotonic() + self.LOOK_SECONDS
                if self.dist.flag_raised(self.flag):
                    self.cancel()
        return super().cancelled

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled("cancelled by the user" if self.local.cancelled else "cancelled in another process")


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
    statistics: dict | None = None   # a finished strip's summary and pixel statistics, merged by rank 0


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


def _label_job(bundle, job: LabelJob, out_dir: Path, options: LabelOptions, callback, cancel) -> tuple[dict[str, str], dict | None]:
    """Label one job: its outputs by kind, and for a strip its statistics (labelling.strips)."""
    if job.rows is not None:
        return label_strip(bundle, job, out_dir, options, callback, cancel)
    result = label_scene(bundle, job.scene, out_dir, options, callback=callback, cancel=cancel)
    return {key: str(getattr(result, key)) for key in RESULT_OUTPUTS if getattr(result, key) is not None}, None


def run_jobs(bundle, jobs: Sequence[LabelJob], out_dir: Path, options: LabelOptions, rank: int = 0, *,
             callback: EventCallback = ignore_event, cancel: CancelToken | None = None,
             report: Callable[[JobRecord], None] = lambda record: None) -> list[JobRecord]:
    """Label ``jobs`` one after another; a failure is recorded and the next job starts, a cancel ends the share."""
    records = []
    for job in jobs:
        record = JobRecord(job.scene, job.name, list(job.rows) if job.rows else None, rank)
        records.append(record)
        if cancel is not None and cancel.cancelled:  # reported like a job cancelled part-way: every job gets its line
            record.status = "cancelled"
            report(record)
            continue
        started = time.perf_counter()
        try:
            record.outputs, record.statistics = _label_job(bundle, job, Path(out_dir), options, callback, cancel)
            record.status = "finished"
        except Cancelled:
            record.status = "cancelled"
        except Exception as error:  # one bad scene must not stop the batch: it is reported instead
            record.status, record.error = "failed", f"{type(error).__name__}: {error}"
        record.seconds = round(time.perf_counter() - started, 3)
        report(record)
    return records


def _scene_results(bundle, jobs: Sequence[LabelJob], records: Sequence[JobRecord], out_dir: Path,
                   options: LabelOptions) -> list[dict]:
    """Per scene: status, seconds, errors, its jobs and its outputs (a striped scene's set is joined and committed
    here; one whose strips did not all finish leaves nothing, and its previous set, untouched)."""
    scenes = []
    for scene in dict.fromkeys(job.scene for job in jobs):
        mine = [record for record in records if record.scene == scene]
        statuses = {record.status for record in mine}
        status = next(state for state in STATUS_ORDER if state in statuses)
        errors = [record.error for record in mine if record.error]
        outputs = {}
        if all(record.rows is None for record in mine):
            outputs = dict(mine[0].outputs)
        else:
            try:
                if status == "finished":
                    outputs = commit_striped_scene(bundle, scene, mine, out_dir, options)
            except Exception as error:  # reported like a failed job: the summary and the other scenes still get written
                status = "failed"
                errors.append(f"joining the strips: {type(error).__name__}: {error}")
            finally:
                shutil.rmtree(staging_folder(out_dir, scene), ignore_errors=True)
            if status != "finished":
                for record in mine:
                    record.outputs = {}
        job_records = [{key: value for key, value in asdict(record).items() if key != "statistics"} for record in mine]
        scenes.append({"scene": scene, "status": status, "seconds": round(sum(record.seconds for record in mine), 3),
                       "errors": errors, "outputs": outputs, "jobs": job_records})
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
    """Rank 0's part once every job is done: the output sets of striped scenes, the index and the summary."""
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
    if dist is not None:
        batch = f"batch{next(_BATCHES)}"
        cancel = RanksCancel(cancel or CancelToken(), dist, f"{batch}/cancel")
    records = run_jobs(bundle, assign(jobs, world_size)[rank], out_dir, options, rank,
                       callback=callback, cancel=cancel, report=report)
    if dist is not None:
        dist.wait_for_all(batch, lambda: cancel.cancelled)
    mine = [asdict(record) for record in records]
    shares = dist.gather_json(mine) if dist is not None else [mine]
    summary = None
    if rank == 0:
        gathered = [JobRecord(**item) for share in shares for item in share]
        summary = write_batch_outputs(bundle, jobs, gathered, out_dir, options, world_size, time.perf_counter() - started)
    return dist.broadcast_json(summary) if dist is not None else summary
