"""Atomic file writes: every output is written to a hidden temporary sibling and renamed into place.

A crash, a cancel or a full disk therefore never leaves half a file under a final name, and a
reader never sees one. Temporary names are unique per write (process id and a random part), so
two writers never rename each other's half-written files.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import glob
import io
import json
import os
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

TEMPORARY_MARK = ".partial"
_OWNER = re.compile(r"\.(\d+)-[0-9a-f]{8}\.partial")
# Files some drivers (SQLite for GeoPackage, GDAL) create beside the one they write.
SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal", ".aux.xml")


def temporary_path(final: Path) -> Path:
    """A hidden, unique sibling of ``final`` (same folder, so the rename is atomic) keeping its suffix."""
    final = Path(final)
    return final.with_name(f".{final.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TEMPORARY_MARK}{final.suffix}")


def remove_stale_temporaries(folder: Path, stem: str = "*") -> list[Path]:
    """Delete temporary files in ``folder`` (of outputs named ``stem``, default all) left by writers
    that no longer run (killed mid-write)."""
    import psutil

    removed = []
    for path in Path(folder).glob(f".{glob.escape(stem) if stem != '*' else stem}.*{TEMPORARY_MARK}*"):
        owner = _OWNER.search(path.name)
        if owner is not None and not psutil.pid_exists(int(owner.group(1))):
            remove_quietly([path])
            removed.append(path)
    return removed


def remove_quietly(paths: Iterable[Path]) -> None:
    """Delete temporary files (or folders) and their driver sidecars, ignoring what is already gone."""
    for path in paths:
        if Path(path).is_dir():
            shutil.rmtree(path, ignore_errors=True)
            continue
        for leftover in (Path(path), *(Path(f"{path}{suffix}") for suffix in SIDECAR_SUFFIXES)):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write ``final`` to; rename it into place on success, delete it on any error.
    Temporaries of ``final`` left by a killed earlier writer are removed first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent, final.stem)
    temporary = temporary_path(final)
    try:
        with full_disk_named(final):
            yield temporary
            os.replace(temporary, final)
    finally:
        remove_quietly([temporary])


@contextlib.contextmanager
def full_disk_named(target: Path) -> Iterator[None]:
    """Errors of the writes in the block, a full disk named after ``target`` (see :func:`raise_naming_full_disk`)."""
    try:
        yield
    except OSError as error:
        raise_naming_full_disk(error, target)


def raise_naming_full_disk(error: OSError, target: Path) -> None:
    """Raise ``error``; a full disk or quota naming ``target`` (the writers below, PIL, GDAL and OGR among
    them, often say only "No space left on device"). For writers whose temporaries are removed on
    error, so the message says nothing half-written was kept."""
    if error.errno not in (errno.ENOSPC, errno.EDQUOT) or error.filename is not None:
        raise error
    raise OSError(error.errno, f"{os.strerror(error.errno)} while writing it (nothing half-written was kept)",
                  str(target)) from error


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_output(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    write_text_atomic(path, csv_text(header, rows))


def replace_all(moves: Sequence[tuple[Path, Path]]) -> None:
    """Move finished temporary files to their final names (each rename is atomic)."""
    for temporary, final in moves:
        os.replace(temporary, final)


def try_lock(handle) -> bool:
    """A non-blocking exclusive OS lock on an open file; released by the OS when the process dies."""
    try:
        handle.seek(0)
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
