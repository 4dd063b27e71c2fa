"""Everything a run trains on, assembled once from the data layer.

MS tiles (teacher + matcher) and RGB tiles (student) are decoded once, into memory while they fit
in the memory budget (``data.memory_budget_gb``), else into the on-disk tile store, and
normalised with per-band statistics of their own TRAIN split. The pseudo-RGB the matcher learns
on is the R,G,B channels of the normalised MS tile, i.e. standardised with the MS train
statistics of those bands; real RGB is standardised with the RGB train statistics. Both sides
thereby become zero-mean/unit-variance per channel, which removes the reflectance-vs-8-bit scale
gap between sensors before the shared RGB encoder M_G sees them.
"""
from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable

import psutil
import torch

from ..config import ConfigError, RunConfig
from ..data import (
    BandPreset,
    ChannelStats,
    Problem,
    align_classes,
    compute_channel_stats,
    discover_ms_archive,
    discover_rgb_folder,
    estimate_memory_bytes,
    get_preset,
    remap_records,
    stratified_split,
)
from ..data.discovery import ClassAlignment, ImageryIndex
from ..data.geometry import training_footprint
from ..data.radiometry import input_radiometry
from ..data.readers import read_header, tile_reading_env
from ..data.store import TileSet, load_tile_set
from ..data.tiles import Tiles
from ..events import CancelToken
from .rundir import tile_store_dir

RGB_BAND_NAMES = ("R", "G", "B")


@dataclass
class RunData:
    preset: BandPreset
    ms_classes: list[str]          # teacher classes: every MS class
    student_classes: list[str]     # shared (and selected) classes, MS-side names, sorted
    ms_multi_label: bool
    alignment: ClassAlignment
    ms_fingerprint: str            # hash of the MS file list + sizes + mtimes (teacher cache key)
    rgb_tiles: Tiles               # (N,3,S,S) normalised
    rgb_labels: torch.Tensor       # (N,) student class index
    rgb_paths: list[str]
    rgb_train: torch.Tensor
    rgb_val: torch.Tensor
    rgb_test: torch.Tensor
    rgb_stats: ChannelStats
    ms_tiles: Tiles | None = None             # (M,C,S,S) normalised; None for the plain baseline
    ms_labels: torch.Tensor | None = None     # (M,) or (M, n_ms_classes) multi-hot
    ms_paths: list[str] = field(default_factory=list)
    ms_train: torch.Tensor | None = None
    ms_val: torch.Tensor | None = None
    ms_stats: ChannelStats | None = None
    problems: list[Problem] = field(default_factory=list)
    rgb_footprint: dict | None = None      # ground covered by one training image (data.geometry.training_footprint)
    rgb_radiometry: dict | None = None     # training inputs before normalisation (data.radiometry.input_radiometry)
    rgb_train_images: list[tuple[str, int, int, float | None]] = field(default_factory=list)  # path, width, height, GSD

    @property
    def teacher_columns(self) -> torch.Tensor:
        """Teacher output columns of the student classes, in student class order."""
        return torch.tensor([self.ms_classes.index(name) for name in self.student_classes], dtype=torch.int64)

    @property
    def ms_membership(self) -> torch.Tensor:
        """(M, n_student) bool: MS tile m belongs to student class c (several c when multi-label)."""
        columns = self.teacher_columns
        if self.ms_multi_label:
            return self.ms_labels[:, columns] > 0.5
        return self.ms_labels[:, None] == columns[None, :]

    def use_ms_stats(self, stats: ChannelStats) -> None:
        """Re-normalise the MS tiles with another run's statistics (a reused teacher's)."""
        self.ms_tiles.use_stats(stats)
        self.ms_stats = stats


def _fingerprint(index: ImageryIndex, preset: BandPreset, tile_size: int) -> str:
    digest = hashlib.sha256(f"{preset.band_names}|{tile_size}".encode())
    for record in index.records:
        stat = record.path.stat()
        digest.update(f"{record.path}|{'/'.join(record.labels)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _content_digest(path: Path) -> str:
    """128-bit BLAKE2b of the file's bytes."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def _file_entries(index: ImageryIndex, known: dict[str, list], cancel: CancelToken | None,
                  progress: Callable[[int, int], None] | None) -> dict[str, list]:
    """{path relative to the archive root: [labels, size, mtime, content digest]} of every usable file.

    A file whose size and time match its ``known`` entry keeps that entry's digest instead of being
    read again, so a resume re-reads only the files that look touched.
    """
    base = index.root if index.root.is_dir() else index.root.parent
    entries = {}
    total = len(index.records)
    report_every = max(1, total // 100)
    for done, record in enumerate(index.records, start=1):
        if cancel is not None:
            cancel.raise_if_cancelled()
        stat = record.path.stat()
        try:
            name = str(record.path.relative_to(base))
        except ValueError:
            name = str(record.path)
        previous = known.get(name, [])
        unchanged = len(previous) == 4 and previous[1:3] == [stat.st_size, stat.st_mtime_ns]
        digest = previous[3] if unchanged else _content_digest(record.path)
        entries[name] = ["/".join(record.labels), stat.st_size, stat.st_mtime_ns, digest]
        if progress is not None and (done % report_every == 0 or done == total):
            progress(done, total)
    return entries


def data_manifest(config: RunConfig, known: dict[str, dict[str, list]] | None = None, *,
                  cancel: CancelToken | None = None,
                  progress: Callable[[str, int, int], None] | None = None) -> dict[str, dict[str, list]]:
    """Every file a run trains on (label, size, modification time, content digest), recorded when a run
    starts and compared when it resumes, because a resumed run must see the same data.

    The content digest, not the time, decides whether a file changed: an archive copied to another
    disk or restored from a backup keeps its bytes but gets new times, and must still resume. Hashing
    costs one extra read of the files at the start (the run reads all their pixels anyway); ``known``
    (the recorded manifest) spares the files whose size and time did not move. ``progress(modality,
    done, total)`` follows the files; ``cancel`` stops between files (a large archive takes a while).
    """
    known = known or {}

    def entries(modality: str, index: ImageryIndex) -> dict[str, list]:
        follow = None if progress is None else lambda done, total: progress(modality, done, total)
        return _file_entries(index, known.get(modality, {}), cancel, follow)

    manifest = {"rgb": entries("rgb", discover_rgb_folder(config.data.rgb_path))}
    if config.uses_teacher:
        manifest["ms"] = entries("ms", discover_ms_archive(config.data.ms_path))
    return manifest


def _content(entry: list, by_digest: bool) -> tuple:
    """What identifies a manifest entry's bytes: size and digest, or size and time without digests."""
    return (entry[1], entry[3]) if by_digest else (entry[1], entry[2])


def data_changes(recorded: dict[str, dict[str, list]], current: dict[str, dict[str, list]]) -> list[str]:
    """What differs between two data manifests, in words (empty when the data is the same).

    A file that left one class folder and appeared in another with the same name and content counts
    as moved, not as removed and added. Manifests written before content digests were recorded are
    compared by size and modification time.
    """
    changes = []
    for modality in sorted(set(recorded) | set(current)):
        before, after = recorded.get(modality, {}), current.get(modality, {})
        by_digest = all(len(entry) == 4 for entry in [*before.values(), *after.values()])
        content = partial(_content, by_digest=by_digest)
        gone = set(before) - set(after)
        new = set(after) - set(before)
        fingerprint = {(Path(name).name, *content(before[name])): name for name in gone}
        moved = sorted(name for name in new if (Path(name).name, *content(after[name])) in fingerprint)
        gone -= {fingerprint[(Path(name).name, *content(after[name]))] for name in moved}
        new -= set(moved)
        common = set(before) & set(after)
        moved += sorted(name for name in common if before[name][0] != after[name][0])
        modified = sorted(name for name in common
                          if content(before[name]) != content(after[name]) and before[name][0] == after[name][0])
        for what, names in (("added", sorted(new)), ("removed", sorted(gone)), ("moved to another class", moved),
                            ("modified", modified)):
            if names:
                example = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
                changes.append(f"{len(names)} {modality.upper()} file(s) {what} ({example})")
    return changes


def _headers(paths: list[str]) -> list:
    """Size, dtype and GSD of each training image, from its header (no pixels decoded)."""
    with tile_reading_env():
        return [read_header(path) for path in paths]


def _stratify_key(labels: torch.Tensor) -> torch.Tensor:
    return labels.argmax(dim=1) if labels.dim() == 2 else labels


def _select_classes(config: RunConfig, shared: list[str]) -> list[str]:
    if len(shared) < 2:
        raise ConfigError("data.class_mapping", f"only {len(shared)} class(es) shared by the MS and RGB data "
                          f"({shared}); at least 2 are needed; map RGB folder names to MS classes")
    if not config.data.classes:
        return list(shared)
    unknown = [name for name in config.data.classes if name not in shared]
    if unknown:
        raise ConfigError("data.classes", f"{unknown} not shared by both modalities; choose from: {', '.join(shared)}")
    if len(set(config.data.classes)) < 2:
        raise ConfigError("data.classes", "select at least 2 classes")
    return sorted(set(config.data.classes))


def _discover(config: RunConfig) -> tuple[ImageryIndex, ImageryIndex, ClassAlignment, list[str]]:
    """Both archives' indexes, their class alignment and the student classes (no pixels read)."""
    if not config.data.ms_path:
        raise ConfigError("data.ms_path", "no MS archive given")
    if not config.data.rgb_path:
        raise ConfigError("data.rgb_path", "no RGB imagery folder given")
    ms_index = discover_ms_archive(config.data.ms_path)
    rgb_index = discover_rgb_folder(config.data.rgb_path)
    alignment = align_classes(ms_index, rgb_index, config.data.class_mapping)
    return ms_index, rgb_index, alignment, _select_classes(config, alignment.shared)


def student_classes(config: RunConfig) -> list[str]:
    """The classes a run's student learns (MS-side names, sorted), from file discovery alone: cheap
    enough to compare two runs' classes before any imagery is decoded."""
    return _discover(config)[3]


def memory_budget_bytes(config: RunConfig, processes: int = 1) -> int:
    """``data.memory_budget_gb``, or half of this machine's memory shared by the ``processes`` of a
    torchrun job on it (each holds its own in-memory tiles) when it is 0."""
    budget = config.data.memory_budget_gb
    return int(budget * 2**30) if budget > 0 else psutil.virtual_memory().total // 2 // max(1, processes)


def on_disk_modalities(needs: dict[str, int], budget: int) -> set[str]:
    """Modalities read from the tile store: the smallest in-memory estimates are kept while they fit the budget."""
    on_disk, used = set(), 0
    for modality, size in sorted(needs.items(), key=lambda item: item[1]):
        if used + size <= budget:
            used += size
        else:
            on_disk.add(modality)
    return on_disk


def _load(modality: str, on_disk: set[str], log, records, class_to_index, tile_size, **options) -> TileSet:
    store = tile_store_dir() if modality in on_disk else None
    loaded = load_tile_set(records, class_to_index, tile_size, store_dir=store, log=log, modality=modality, **options)
    if loaded.folder is not None:
        log(f"{modality.upper()} tiles read from the tile store {loaded.folder}" + (" (reused)" if loaded.reused else ""))
    return loaded


def assemble_run_data(config: RunConfig, *, need_ms: bool, log: Callable[[str], None] = lambda message: None,
                      cancel: CancelToken | None = None,
                      progress: Callable[[str, int, int], None] | None = None, processes: int = 1) -> RunData:
    """Discover, align, load and split both modalities; statistics from the train splits only.

    ``progress(modality, done, total)`` follows the decoding of each modality; ``processes`` on this
    machine share the automatic memory budget.
    """
    data = config.data
    try:
        preset = get_preset(data.band_preset, data.custom_bands, data.custom_rgb)
    except ValueError as error:
        raise ConfigError("data.band_preset", str(error)) from None
    ms_index, rgb_index, alignment, student_classes = _discover(config)
    problems = [*ms_index.problems, *rgb_index.problems, *alignment.problems]
    workers = config.train.workers or None

    rgb_records = remap_records(rgb_index.records, alignment.rgb_to_ms, student_classes)
    needs = {"rgb": estimate_memory_bytes(len(rgb_records), 3, data.rgb_tile_size)}
    if need_ms:
        needs["ms"] = estimate_memory_bytes(len(ms_index.records), preset.band_count, data.ms_tile_size)
    budget = memory_budget_bytes(config, processes)
    on_disk = on_disk_modalities(needs, budget)
    for modality in sorted(on_disk):
        log(f"{modality.upper()} tiles need {needs[modality] / 2**30:.2f} GB in memory, beyond the memory budget of "
            f"{budget / 2**30:.2f} GB (data.memory_budget_gb): they are read from an on-disk tile store")

    def progress_of(modality: str):
        return None if progress is None else lambda done, total: progress(modality, done, total)

    log(f"loading {len(rgb_records)} RGB images ({len(student_classes)} classes) at {data.rgb_tile_size} px")
    rgb = _load("rgb", on_disk, log, rgb_records, {name: i for i, name in enumerate(student_classes)}, data.rgb_tile_size,
                workers=workers, cancel=cancel, progress=progress_of("rgb"))
    problems += rgb.problems
    if len(rgb.tiles) == 0:
        raise ValueError(f"{data.rgb_path}: no readable RGB images of the classes {student_classes}")
    rgb_train, rgb_val, rgb_test = (torch.from_numpy(part) for part in
                                    stratified_split(rgb.labels.numpy(), tuple(data.rgb_split), config.train.seed))
    if min(len(rgb_train), len(rgb_val), len(rgb_test)) == 0:
        raise ValueError(f"{data.rgb_path}: too few RGB images ({len(rgb.tiles)}) for train/val/test splits {data.rgb_split}")
    raw_train = rgb.tiles.subset(rgb_train)
    rgb_stats = compute_channel_stats(raw_train)
    headers = _headers([rgb.paths[index] for index in rgb_train.tolist()])
    radiometry = input_radiometry([header.path for header in headers], [header.dtype for header in headers])
    rgb.tiles.use_stats(rgb_stats)
    run_data = RunData(
        preset=preset, ms_classes=list(ms_index.classes), student_classes=student_classes,
        ms_multi_label=ms_index.multi_label, alignment=alignment,
        ms_fingerprint=_fingerprint(ms_index, preset, data.ms_tile_size),
        rgb_tiles=rgb.tiles, rgb_labels=rgb.labels, rgb_paths=rgb.paths,
        rgb_train=rgb_train, rgb_val=rgb_val, rgb_test=rgb_test, rgb_stats=rgb_stats, problems=problems,
        rgb_footprint=training_footprint(headers, data.rgb_gsd),
        rgb_radiometry=radiometry,
        rgb_train_images=[(header.path, header.width, header.height, header.gsd or data.rgb_gsd or None) for header in headers],
    )
    if not need_ms:
        return run_data

    class_to_index = {name: i for i, name in enumerate(ms_index.classes)}
    log(f"loading {len(ms_index.records)} MS tiles ({len(ms_index.classes)} classes, "
        f"{preset.band_count} bands) at {data.ms_tile_size} px")
    ms = _load("ms", on_disk, log, ms_index.records, class_to_index, data.ms_tile_size,
               bands=list(range(preset.band_count)), multi_label=ms_index.multi_label, workers=workers, cancel=cancel,
               progress=progress_of("ms"))
    run_data.problems += ms.problems
    if len(ms.tiles) == 0:
        raise ValueError(f"{data.ms_path}: no readable MS tiles with {preset.band_count} bands ({preset.name})")
    split = stratified_split(_stratify_key(ms.labels).numpy(),
                             (1.0 - data.ms_val_fraction, data.ms_val_fraction, 0.0), config.train.seed)
    ms_train, ms_val = torch.from_numpy(split[0]), torch.from_numpy(split[1])
    if len(ms_train) == 0 or len(ms_val) == 0:
        raise ValueError(f"{data.ms_path}: too few MS tiles ({len(ms.tiles)}) for a train/val split")
    ms_stats = compute_channel_stats(ms.tiles.subset(ms_train))
    ms.tiles.use_stats(ms_stats)
    run_data.ms_tiles = ms.tiles
    run_data.ms_labels = ms.labels
    run_data.ms_paths = ms.paths
    run_data.ms_train, run_data.ms_val, run_data.ms_stats = ms_train, ms_val, ms_stats
    missing = [name for name, has in zip(student_classes, run_data.ms_membership.any(dim=0).tolist()) if not has]
    if missing:
        raise ValueError(f"{data.ms_path}: no readable MS tiles for the student class(es) {missing}")
    return run_data
