"""Check a labelled class map against reference data: the accuracy assessment a map user reports.

The reference is a vector file (GeoPackage, shapefile, ...) of labelled points or polygons with a
class column, or a reference class raster; it is reprojected to the map's CRS. The result uses the
remote-sensing vocabulary: confusion matrix (rows = reference, columns = map), overall accuracy
with a 95 % confidence interval (Wilson score interval), per-class user's accuracy (of the map's
pixels labelled k, the share that is k on the ground), producer's accuracy (of the ground that is
k, the share mapped as k) and F1.

Units: points are the samples of a point reference; for polygons every covered pixel is a sample
(``pixels``) and, because neighbouring pixels are not independent, each polygon is also judged by
the map's majority class inside it (``polygons``), whose interval is the honest one; a raster
reference is compared pixel by pixel. The map is read block by block, so memory does not grow with it,
and a CancelToken is checked between blocks (and point chunks): a cancelled assessment raises
Cancelled having written nothing (``assess_map`` only reads; ``write_assessment`` writes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sembridge_engine.atomic import write_csv_atomic, write_json_atomic
from sembridge_engine.events import CancelToken

from .writers import class_names_of

Z_95 = 1.959964
CLASS_COLUMNS = ("class", "class_name", "classname", "label", "landcover", "land_cover")
ASSESS_BLOCK = 1024
UNITS = ("points", "pixels", "polygons")
POINT_CHUNK = 4096  # points sampled between two cancellation checks


class AssessmentError(ValueError):
    """A map or reference that cannot be compared; the message names the file and what to change."""


@dataclass
class Accuracy:
    """Agreement of one sampling unit (pixels, points or polygons) over the map's classes."""

    unit: str
    class_names: list[str]
    confusion: np.ndarray          # (K, K) counts, rows = reference class, columns = map class

    @property
    def samples(self) -> int:
        return int(self.confusion.sum())

    @property
    def overall(self) -> float:
        return float(np.trace(self.confusion) / self.samples) if self.samples else float("nan")

    def interval(self) -> tuple[float, float]:
        """Wilson score 95 % interval of the overall accuracy (sensible for small samples and OA near 0 or 1)."""
        n = self.samples
        if not n:
            return float("nan"), float("nan")
        p, z2 = self.overall, Z_95 ** 2
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def per_class(self) -> list[dict]:
        diagonal = np.diag(self.confusion).astype(np.float64)
        mapped, referenced = self.confusion.sum(axis=0), self.confusion.sum(axis=1)
        users = np.divide(diagonal, mapped, out=np.full_like(diagonal, np.nan), where=mapped > 0)
        producers = np.divide(diagonal, referenced, out=np.full_like(diagonal, np.nan), where=referenced > 0)
        total = users + producers
        f1 = np.divide(2 * users * producers, total, out=np.full_like(diagonal, np.nan), where=total > 0)
        f1[(mapped + referenced > 0) & ~(total > 0)] = 0.0
        return [{"class_name": name, "reference_count": int(referenced[index]), "map_count": int(mapped[index]),
                 "users_accuracy": _number(users[index]), "producers_accuracy": _number(producers[index]),
                 "f1": _number(f1[index])} for index, name in enumerate(self.class_names)]

    def to_dict(self) -> dict:
        low, high = self.interval()
        per_class = self.per_class()
        present = [entry["f1"] for entry in per_class if entry["f1"] is not None]
        return {"unit": self.unit, "samples": self.samples, "overall_accuracy": _number(self.overall),
                "overall_accuracy_ci95": [_number(low), _number(high)],
                "macro_f1": _number(float(np.mean(present))) if present else None,
                "classes": per_class, "confusion": self.confusion.tolist()}

    def csv_rows(self) -> tuple[list[str], list[list]]:
        """Confusion matrix with row totals and per-class accuracies, then column totals and the overall line."""
        header = ["reference \\ map", *self.class_names, "reference_total", "producers_accuracy", "users_accuracy", "f1"]
        rows = []
        for index, entry in enumerate(self.per_class()):
            rows.append([entry["class_name"], *self.confusion[index].tolist(), entry["reference_count"],
                         _cell(entry["producers_accuracy"]), _cell(entry["users_accuracy"]), _cell(entry["f1"])])
        rows.append(["map_total", *self.confusion.sum(axis=0).tolist(), self.samples, "", "", ""])
        low, high = self.interval()
        rows.append(["overall_accuracy", _cell(self.overall), f"ci95 {_cell(low)}..{_cell(high)}", *[""] * (len(header) - 3)])
        return header, rows


@dataclass
class Assessment:
    """Every unit's accuracy plus what was left out and why."""

    map_path: Path
    reference_path: Path
    reference_kind: str                    # points | polygons | raster
    accuracies: list[Accuracy]
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"map": str(self.map_path), "reference": str(self.reference_path), "reference_kind": self.reference_kind,
                **self.details, "units": {accuracy.unit: accuracy.to_dict() for accuracy in self.accuracies}}


def _number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _cell(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _open_map(path: Path):
    import rasterio
    from rasterio.errors import RasterioError

    if not path.is_file():
        raise AssessmentError(f"{path}: map not found")
    try:
        dataset = rasterio.open(path)
    except RasterioError as error:
        raise AssessmentError(f"{path}: not a readable class raster ({error})") from None
    names = class_names_of(dataset)
    if not names:
        dataset.close()
        raise AssessmentError(f"{path}: has no class names (the 'class_names' tag a SemBridge class map carries); "
                              "give the _classes.tif written by 'sembridge label'")
    if dataset.crs is None:
        dataset.close()
        raise AssessmentError(f"{path}: has no CRS, so reference data cannot be placed on it")
    return dataset, names


def _class_ids(values, names: Sequence[str], source: str) -> tuple[np.ndarray, list[str]]:
    """Reference values (class names, or integer ids of the map's classes) -> ids, -1 for unknown ones."""
    lookup = {name.lower(): index for index, name in enumerate(names)}
    ids, unknown = np.full(len(values), -1, dtype=np.int64), set()
    for position, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, (int, np.integer)) or (isinstance(value, float) and float(value).is_integer()):
            if 0 <= int(value) < len(names):
                ids[position] = int(value)
            else:
                unknown.add(str(value))
            continue
        index = lookup.get(str(value).strip().lower())
        if index is None:
            unknown.add(str(value))
        else:
            ids[position] = index
    return ids, sorted(unknown)


def _read_vector(path: Path, class_column: str | None, layer: str | None, map_crs):
    import geopandas

    try:
        frame = geopandas.read_file(path, layer=layer, engine="pyogrio")
    except Exception as error:  # pyogrio raises DataSourceError / DataLayerError with GDAL's message
        raise AssessmentError(f"{path}: not a readable vector file ({error})") from None
    if frame.empty:
        raise AssessmentError(f"{path}: holds no features")
    column = class_column or next((name for name in frame.columns if name.lower() in CLASS_COLUMNS), None)
    if column is None or column not in frame.columns:
        raise AssessmentError(f"{path}: no class column{f' {class_column!r}' if class_column else ''}; its columns are "
                              f"{', '.join(map(str, frame.columns.drop('geometry')))} (choose one with --class-column)")
    if frame.crs is None:
        raise AssessmentError(f"{path}: has no CRS; set one (e.g. in QGIS) so it can be placed on the map")
    source_crs = frame.crs.to_string()
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty].to_crs(map_crs.to_wkt())
    kinds = set(frame.geometry.geom_type)
    if kinds <= {"Point", "MultiPoint"}:
        kind = "points"
        frame = frame.explode(index_parts=False)
    elif kinds <= {"Polygon", "MultiPolygon"}:
        kind = "polygons"
    else:
        raise AssessmentError(f"{path}: mixes or holds unsupported geometries ({', '.join(sorted(kinds))}); use points or polygons")
    return frame, column, kind, source_crs


def _raise_if_cancelled(cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.raise_if_cancelled()


def _blocks(dataset, block: int, cancel: CancelToken | None):
    """The map's windows, checking ``cancel`` before each."""
    from rasterio.windows import Window

    for row in range(0, dataset.height, block):
        for col in range(0, dataset.width, block):
            _raise_if_cancelled(cancel)
            yield Window(col, row, min(block, dataset.width - col), min(block, dataset.height - row))


def _assess_points(dataset, names: list[str], ids: np.ndarray, frame,
                   cancel: CancelToken | None) -> tuple[list[Accuracy], dict]:
    from rasterio.transform import rowcol

    k = len(names)
    xs, ys = frame.geometry.x.to_numpy(), frame.geometry.y.to_numpy()
    rows, cols = rowcol(dataset.transform, xs, ys)
    rows, cols = np.asarray(rows), np.asarray(cols)
    inside = (rows >= 0) & (rows < dataset.height) & (cols >= 0) & (cols < dataset.width)
    mapped = np.full(len(ids), -1, dtype=np.int64)
    positions = np.flatnonzero(inside)
    for start in range(0, len(positions), POINT_CHUNK):
        _raise_if_cancelled(cancel)
        chunk = positions[start:start + POINT_CHUNK]
        values = np.array([value[0] for value in dataset.sample(zip(xs[chunk], ys[chunk]))])
        mapped[chunk] = np.where(values == dataset.nodata, -1, values)
    used = (ids >= 0) & (mapped >= 0) & (mapped < k)
    confusion = np.bincount(ids[used] * k + mapped[used], minlength=k * k).reshape(k, k)
    details = {"points_outside_map": int((~inside).sum()), "points_on_map_nodata": int((inside & (mapped < 0)).sum())}
    return [Accuracy("points", names, confusion)], details


def _assess_polygons(dataset, names: list[str], ids: np.ndarray, frame, block: int,
                     cancel: CancelToken | None) -> tuple[list[Accuracy], dict]:
    import shapely
    from rasterio.features import rasterize

    k, count = len(names), len(ids)
    geometries = frame.geometry.to_numpy()
    tree = shapely.STRtree(geometries)
    histogram = np.zeros((count, k), dtype=np.int64)
    nodata_pixels = 0
    for window in _blocks(dataset, block, cancel):
        candidates = tree.query(shapely.box(*dataset.window_bounds(window)))
        if not len(candidates):
            continue
        owner = rasterize(((geometries[index], int(index) + 1) for index in candidates), out_shape=(window.height, window.width),
                          transform=dataset.window_transform(window), fill=0, dtype="int32")
        covered = owner > 0
        if not covered.any():
            continue
        mapped = dataset.read(1, window=window).astype(np.int64)
        labelled = covered & (mapped != dataset.nodata) & (mapped < k)
        nodata_pixels += int((covered & ~labelled).sum())
        polygon = owner[labelled] - 1
        histogram += np.bincount(polygon * k + mapped[labelled], minlength=count * k).reshape(count, k)
    known = ids >= 0
    pixels = np.zeros((k, k), dtype=np.int64)
    np.add.at(pixels, ids[known], histogram[known])
    judged = known & (histogram.sum(axis=1) > 0)
    majority = histogram.argmax(axis=1)
    polygons = np.bincount(ids[judged] * k + majority[judged], minlength=k * k).reshape(k, k)
    details = {"polygons_without_map_pixels": int((known & ~judged).sum()), "pixels_on_map_nodata": nodata_pixels}
    return [Accuracy("pixels", names, pixels), Accuracy("polygons", names, polygons)], details


def _assess_raster(dataset, names: list[str], reference_path: Path, block: int,
                   cancel: CancelToken | None) -> tuple[list[Accuracy], dict]:
    """Pixel by pixel against a reference class raster, warped (nearest) onto each map block."""
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.warp import Resampling, reproject

    k = len(names)
    try:
        reference = rasterio.open(reference_path)
    except RasterioError as error:
        raise AssessmentError(f"{reference_path}: neither a vector file nor a readable raster ({error})") from None
    with reference:
        if reference.crs is None:
            raise AssessmentError(f"{reference_path}: the reference raster has no CRS")
        reference_names = class_names_of(reference)
        if reference_names:
            lookup, unknown = _class_ids(reference_names, names, str(reference_path))
        else:
            lookup, unknown = np.arange(k), []
        lookup = np.concatenate([lookup, np.full(max(0, 65536 - len(lookup)), -1)])  # ids beyond the list are unknown
        fill = 65535 if reference.nodata != 65535 else 65534
        confusion = np.zeros(k * k, dtype=np.int64)
        outside = 0
        for window in _blocks(dataset, block, cancel):
            truth = np.full((window.height, window.width), fill, dtype=np.int64)
            reproject(rasterio.band(reference, 1), truth, src_nodata=reference.nodata, dst_nodata=fill,
                      dst_transform=dataset.window_transform(window), dst_crs=dataset.crs, resampling=Resampling.nearest)
            mapped = dataset.read(1, window=window).astype(np.int64)
            has_truth = (truth != fill) & (truth >= 0) & (truth < len(lookup))
            truth_ids = np.where(has_truth, lookup[np.clip(truth, 0, len(lookup) - 1)], -1)
            used = (truth_ids >= 0) & (mapped != dataset.nodata) & (mapped < k)
            outside += int((~has_truth).sum())
            confusion += np.bincount(truth_ids[used] * k + mapped[used], minlength=k * k)
        details = {"reference_crs": reference.crs.to_string(), "map_pixels_without_reference": outside,
                   "unknown_reference_classes": unknown}
    return [Accuracy("pixels", names, confusion.reshape(k, k))], details


def assess_map(map_path, reference_path, *, class_column: str | None = None, layer: str | None = None,
               block: int = ASSESS_BLOCK, cancel: CancelToken | None = None) -> Assessment:
    """Compare the class map at ``map_path`` with points, polygons or a raster at ``reference_path``;
    raises Cancelled once ``cancel`` is set (checked between blocks, point chunks and reading steps)."""
    map_path, reference_path = Path(map_path), Path(reference_path)
    if not reference_path.exists():
        raise AssessmentError(f"{reference_path}: reference not found")
    dataset, names = _open_map(map_path)
    with dataset:
        if reference_path.suffix.lower() in (".tif", ".tiff", ".vrt", ".img"):
            accuracies, details = _assess_raster(dataset, names, reference_path, block, cancel)
            kind = "raster"
        else:
            frame, column, kind, source_crs = _read_vector(reference_path, class_column, layer, dataset.crs)
            _raise_if_cancelled(cancel)
            ids, unknown = _class_ids(frame[column].tolist(), names, str(reference_path))
            if kind == "points":
                accuracies, details = _assess_points(dataset, names, ids, frame, cancel)
            else:
                accuracies, details = _assess_polygons(dataset, names, ids, frame, block, cancel)
            details = {"reference_crs": source_crs, "class_column": column, "features": len(frame),
                       "features_with_unknown_class": int((ids < 0).sum()), "unknown_reference_classes": unknown, **details}
        details["map_crs"] = dataset.crs.to_string()
    if not any(accuracy.samples for accuracy in accuracies):
        raise AssessmentError(f"{reference_path}: no reference sample falls on a labelled pixel of {map_path.name} "
                              f"(check that both cover the same place and share class names: {', '.join(names)})")
    return Assessment(map_path, reference_path, kind, accuracies, details)


def assess_to_files(map_path, reference_path, out_prefix, *, class_column: str | None = None,
                    layer: str | None = None, cancel: CancelToken | None = None) -> tuple[Assessment, list[Path]]:
    """``assess_map`` then ``write_assessment``; cancelled at any point before writing, it writes nothing
    (earlier files under the prefix stay as they were)."""
    assessment = assess_map(map_path, reference_path, class_column=class_column, layer=layer, cancel=cancel)
    _raise_if_cancelled(cancel)
    return assessment, write_assessment(assessment, out_prefix)


def assessment_files(out_prefix) -> list[Path]:
    """Every file an assessment under ``out_prefix`` may write: the JSON and one CSV per unit."""
    prefix = Path(out_prefix)
    return [prefix.with_name(prefix.name + ".json"), *(prefix.with_name(f"{prefix.name}_{unit}.csv") for unit in UNITS)]


def write_assessment(assessment: Assessment, out_prefix) -> list[Path]:
    """``<prefix>.json`` (everything) and ``<prefix>_<unit>.csv`` (confusion matrix and accuracies) per unit, atomically.
    A CSV of a unit this assessment lacks, left by an earlier one under the same prefix, is removed so
    the files beside each other always describe one assessment."""
    prefix = Path(out_prefix)
    written = [prefix.with_name(prefix.name + ".json")]
    write_json_atomic(written[0], assessment.to_dict())
    for accuracy in assessment.accuracies:
        path = prefix.with_name(f"{prefix.name}_{accuracy.unit}.csv")
        write_csv_atomic(path, *accuracy.csv_rows())
        written.append(path)
    for stale in set(assessment_files(prefix)) - set(written):
        stale.unlink(missing_ok=True)
    return written
