"""Finding tiles and their classes in a user's folders, and lining up MS and RGB class names.

Discovery only lists and stats files (cheap even for 27k tiles); decoding problems are found
when tiles are loaded. Everything odd becomes a Problem naming the path; only a missing root
raises.
"""
from __future__ import annotations

import csv
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping


from ..events import CancelToken
from .problems import ImageReadError, Problem
from .readers import (
    IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    read_header,
)

# Files operating systems and tools drop into folders; never worth a message.
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"})
MANIFEST_LABEL_SEPARATORS = re.compile(r"[;|]")


@dataclass(frozen=True)
class TileRecord:
    path: Path
    labels: tuple[str, ...]


@dataclass
class ImageryIndex:
    root: Path
    modality: str
    records: list[TileRecord]
    classes: list[str]
    problems: list[Problem] = field(default_factory=list)
    multi_label: bool = False

    def counts(self) -> dict[str, int]:
        """Tiles per class (a multi-label tile counts once for each of its labels), in class order."""
        counter = Counter(label for record in self.records for label in record.labels)
        return {name: counter.get(name, 0) for name in self.classes}


@dataclass
class ClassAlignment:
    shared: list[str]
    ms_only: list[str]
    rgb_only: list[str]
    rgb_to_ms: dict[str, str]
    problems: list[Problem] = field(default_factory=list)


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in IGNORED_NAMES


def require_root(path) -> Path:
    root = Path(path).expanduser().absolute()
    if not root.exists():
        raise FileNotFoundError(f"imagery path does not exist: {root}")
    return root


def not_an_imagery_folder(root: Path, suffixes: frozenset[str]) -> str:
    """Why ``root`` cannot be a folder of class folders, judged from two levels only ("" when it may be).

    A mistyped or half-typed path (``/``, ``/home``) would otherwise send the recursive walk through
    a whole file system: a file-system root is never an imagery folder, and neither is a folder in
    none of whose sub-folders an image file lies (``<root>/<Class>/<image>``)."""
    if Path(os.path.realpath(root)).parent == Path(os.path.realpath(root)):
        return f"{root} is the root of a file system, not an imagery folder; choose the folder that holds the class folders"
    try:
        with os.scandir(root) as entries:
            folders = [entry.path for entry in entries if not _is_ignored(entry.name) and _is_folder(entry)]
    except OSError:
        return ""  # the walk reports an unreadable root with its reason
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                if any(Path(entry.name).suffix.lower() in suffixes and not _is_ignored(entry.name) for entry in entries):
                    return ""
        except OSError:
            continue
    return (f"{root} is not an imagery folder: none of its sub-folders holds image files "
            f"({', '.join(sorted(suffixes))}); expected <folder>/<Class>/<image files>")


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _walk_class_folder(folder: Path, suffixes: frozenset[str], problems: list[Problem], root: Path,
                       cancel: CancelToken | None = None) -> list[Path]:
    """Image files under one class folder (recursively), following symlinks but not their loops.

    The archive root counts as visited so a link back to it cannot pull every class into this one.
    ``cancel`` is checked once per folder, so a walk of a big tree stops when the user asks.
    """
    images: list[Path] = []
    visited: set[str] = {os.path.realpath(root)}

    def report_unreadable(error: OSError) -> None:
        problems.append(Problem(str(error.filename or folder), f"cannot read folder: {error.strerror or error}"))

    for directory, subdirectories, files in os.walk(folder, onerror=report_unreadable, followlinks=True):
        if cancel is not None:
            cancel.raise_if_cancelled()
        real = os.path.realpath(directory)
        if real in visited:
            problems.append(Problem(directory, f"symlink loop: this folder leads back to {real}, already scanned; not followed"))
            subdirectories.clear()
            continue
        visited.add(real)
        subdirectories[:] = sorted(name for name in subdirectories if not _is_ignored(name))
        for name in sorted(files):
            if _is_ignored(name):
                continue
            path = Path(directory, name)
            if path.suffix.lower() not in suffixes:
                expected = ", ".join(sorted(suffixes))
                problems.append(Problem(str(path), f"skipped: not an image file (expected {expected})"))
            elif not path.exists():
                problems.append(Problem(str(path), "skipped: broken symlink (its target does not exist)"))
            elif path.stat().st_size == 0:
                problems.append(Problem(str(path), "skipped: empty file (0 bytes)"))
            else:
                images.append(path)
    return images


def _discover_folder(root: Path, modality: str, suffixes: frozenset[str],
                     cancel: CancelToken | None = None) -> ImageryIndex:
    refusal = not_an_imagery_folder(root, suffixes)
    if refusal:
        raise ValueError(refusal)
    problems: list[Problem] = []
    records: list[TileRecord] = []
    classes: list[str] = []
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except PermissionError as error:
        raise PermissionError(f"cannot read imagery folder {root}: {error.strerror}") from None
    for entry in entries:
        if _is_ignored(entry.name):
            continue
        path = Path(entry.path)
        try:
            is_folder = entry.is_dir()
        except OSError as error:
            problems.append(Problem(str(path), f"cannot read: {error.strerror or error}"))
            continue
        if not is_folder:
            if path.suffix.lower() in suffixes:
                problems.append(Problem(str(path), "skipped: image outside a class folder (put it in <root>/<Class>/)"))
            continue
        if not os.access(path, os.R_OK | os.X_OK):
            problems.append(Problem(str(path), "cannot read class folder: permission denied"))
            continue
        images = _walk_class_folder(path, suffixes, problems, root, cancel)
        if not images:
            problems.append(Problem(str(path), f"empty class folder: no image files, class {entry.name!r} left out"))
            continue
        classes.append(entry.name)
        records.extend(TileRecord(image, (entry.name,)) for image in images)
    if not classes:
        problems.append(Problem(str(root), "no class folders with images found (expected <root>/<Class>/<image files>)"))
    return ImageryIndex(root, modality, records, classes, problems, multi_label=False)


def _split_labels(text: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for label in MANIFEST_LABEL_SEPARATORS.split(text):
        if label.strip():
            seen[label.strip()] = None
    return tuple(seen)


def discover_manifest(csv_path: Path, modality: str = "ms") -> ImageryIndex:
    """A CSV manifest ``path,labels`` (labels separated by ';' or '|'; paths relative to the CSV)."""
    problems: list[Problem] = []
    records: list[TileRecord] = []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{csv_path}: cannot read CSV manifest: {error}") from None
    if not rows:
        raise ValueError(f"{csv_path}: CSV manifest is empty; expected a header 'path,labels'")
    header = [cell.strip().lower() for cell in rows[0]]
    if "path" not in header or "labels" not in header:
        raise ValueError(f"{csv_path}: CSV manifest needs the columns 'path' and 'labels'; found {rows[0]}")
    path_column, labels_column = header.index("path"), header.index("labels")
    seen: set[Path] = set()
    for line_number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{csv_path}:{line_number}"
        if len(row) <= max(path_column, labels_column):
            problems.append(Problem(where, f"skipped: row has {len(row)} column(s), expected path and labels"))
            continue
        relative, labels = row[path_column].strip(), _split_labels(row[labels_column])
        try:
            path = (csv_path.parent / relative).resolve() if not Path(relative).is_absolute() else Path(relative)
            problem = _manifest_row_problem(path, labels, line_number, csv_path, seen, modality)
        except (OSError, ValueError) as error:  # a NUL byte or an over-long name in the row
            path, problem = Path(relative[:200]), f"skipped: not a usable path in row {line_number} ({error})"
        if problem:
            problems.append(Problem(str(path), problem))
        else:
            seen.add(path)
            records.append(TileRecord(path, labels))
    classes = sorted({label for record in records for label in record.labels})
    if not records:
        problems.append(Problem(str(csv_path), "no usable rows: the manifest lists no existing image files"))
    multi_label = any(len(record.labels) > 1 for record in records)
    return ImageryIndex(csv_path, modality, records, classes, problems, multi_label)


def _manifest_row_problem(path: Path, labels: tuple[str, ...], line_number: int, csv_path: Path, seen: set[Path],
                          modality: str) -> str:
    """Why a manifest row cannot be used ("" when it can)."""
    if not labels:
        return f"skipped: no labels in manifest row {line_number}"
    if path.suffix.lower() not in TIFF_SUFFIXES | (IMAGE_SUFFIXES if modality == "rgb" else frozenset()):
        return f"skipped: not an image file (manifest row {line_number})"
    if path in seen:
        return f"skipped: listed twice in the manifest (row {line_number})"
    if not path.is_file():
        return f"skipped: listed in {csv_path.name} (row {line_number}) but not found"
    if path.stat().st_size == 0:
        return "skipped: empty file (0 bytes)"
    return ""


def discover_ms_archive(path, *, cancel: CancelToken | None = None) -> ImageryIndex:
    """MS tiles: ``<root>/<Class>/*.tif`` (single-label) or a CSV manifest ``path,labels``.

    A folder that cannot be an archive (see :func:`not_an_imagery_folder`) raises ValueError before
    any walk; ``cancel`` stops a walk in progress (raises Cancelled)."""
    root = require_root(path)
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return discover_manifest(root, "ms")
        raise ValueError(f"{root}: an MS archive is a folder of class folders or a CSV manifest (.csv)")
    return _discover_folder(root, "ms", TIFF_SUFFIXES, cancel)


def discover_rgb_folder(path, *, cancel: CancelToken | None = None) -> ImageryIndex:
    """RGB images: ``<root>/<Class>/*.{png,jpg,jpeg,tif,tiff}``, any mix and size, or a CSV manifest
    (refusals and ``cancel`` as for :func:`discover_ms_archive`)."""
    root = require_root(path)
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return discover_manifest(root, "rgb")
        raise ValueError(f"{root}: RGB imagery is a folder of class folders or a CSV manifest (.csv)")
    return _discover_folder(root, "rgb", IMAGE_SUFFIXES, cancel)


def _normalised_name(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def align_classes(ms: ImageryIndex, rgb: ImageryIndex, mapping: Mapping[str, str] = {}) -> ClassAlignment:
    """Which MS classes the student can learn: those with RGB images after renaming RGB folders.

    ``mapping`` renames RGB classes to MS classes (several RGB folders may map to one MS class).
    Without an entry an RGB class keeps its name, or takes the MS class that differs only in case,
    spaces or punctuation ("sea_lake" -> "SeaLake").
    """
    problems: list[Problem] = []
    ms_classes = set(ms.classes)
    by_normalised = {_normalised_name(name): name for name in ms.classes}
    rgb_to_ms: dict[str, str] = {}
    for name in rgb.classes:
        if name in mapping:
            rgb_to_ms[name] = mapping[name]
        elif name in ms_classes:
            rgb_to_ms[name] = name
        else:
            rgb_to_ms[name] = by_normalised.get(_normalised_name(name), name)
    for source, target in mapping.items():
        if source not in rgb.classes:
            problems.append(Problem(str(rgb.root), f"class mapping {source!r} -> {target!r}: no RGB class folder {source!r}"))
    rgb_only = sorted(name for name, target in rgb_to_ms.items() if target not in ms_classes)
    shared = sorted({target for target in rgb_to_ms.values() if target in ms_classes})
    ms_only = sorted(ms_classes - set(shared))
    for name in ms_only:
        problems.append(Problem(_class_location(ms, name),
                                f"class {name!r} has MS tiles but no RGB images; the student will not learn it"))
    for name in rgb_only:
        target = rgb_to_ms[name]
        renamed = f" (mapped to {target!r})" if target != name else ""
        problems.append(Problem(_class_location(rgb, name),
                                f"class {name!r}{renamed} has RGB images but no MS tiles; its images are not used"))
    return ClassAlignment(shared, ms_only, rgb_only, rgb_to_ms, problems)


def _class_location(index: ImageryIndex, name: str) -> str:
    return str(index.root if index.root.is_file() else index.root / name)


def remap_records(records: list[TileRecord], rgb_to_ms: Mapping[str, str], keep: list[str]) -> list[TileRecord]:
    """RGB records relabelled with MS class names, keeping only tiles of the ``keep`` classes."""
    wanted = set(keep)
    remapped = []
    for record in records:
        labels = tuple(dict.fromkeys(rgb_to_ms.get(label, label) for label in record.labels))
        labels = tuple(label for label in labels if label in wanted)
        if labels:
            remapped.append(TileRecord(record.path, labels))
    return remapped


def detect_modality(path) -> str:
    """"ms" or "rgb" from the first readable image: more than 3 bands or a non-uint8 dtype means MS."""
    root = require_root(path)
    if root.is_file():
        return "ms" if root.suffix.lower() == ".csv" else _modality_of_file(root) or "ms"
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories if not _is_ignored(name))
        for name in sorted(files):
            path = Path(directory, name)
            if _is_ignored(name) or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            modality = _modality_of_file(path)
            if modality is not None:
                return modality
    return "ms"


def _modality_of_file(path: Path) -> str | None:
    try:
        header = read_header(path)
    except ImageReadError:
        return None
    return "ms" if header.band_count > 3 or header.dtype != "uint8" else "rgb"
