"""What a bundle is, without PyTorch: file names, metadata validation and a metadata-only reader.

``read_bundle_info`` opens a bundle as the torch-free ONNX runtime needs it (metadata and the
ONNX graph's bytes); ``model.load_bundle`` builds on it and adds the PyTorch model.
"""
from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sembridge_engine.colours import hex_to_rgb
from sembridge_engine.config import MAX_TILE

FORMAT_VERSION = 1
BUNDLE_SUFFIX = ".sembridge"
WEIGHTS_NAME = "weights.safetensors"
METADATA_NAME = "metadata.json"
ONNX_NAME = "model.onnx"
# Far above any real bundle (a ResNet34's weights are ~85 MB), far below what would exhaust memory.
MEMBER_LIMITS = {METADATA_NAME: 16 * 2**20, WEIGHTS_NAME: 1024 * 2**20, ONNX_NAME: 1024 * 2**20}

KNOWN_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")

# key -> type(s) every bundle's metadata.json must have
REQUIRED_METADATA: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "architecture": str,
    "in_channels": int,
    "num_classes": int,
    "class_names": list,
    "class_colours": list,
    "band_names": list,
    "tile_size": int,
    "channel_stats": dict,
    "training": dict,
    "engine_version": str,
    "config_hash": str,
    "created": str,
}


class BundleError(ValueError):
    """A bundle or run folder that cannot be exported or loaded; the message names the file and key."""


@dataclass
class BundleInfo:
    """A bundle's validated metadata (and its ONNX graph, when it has one), read without PyTorch."""

    path: Path
    metadata: dict[str, Any]
    class_names: list[str]
    colours: list[str]
    tile_size: int
    band_names: list[str]
    onnx_bytes: bytes | None = None

    @property
    def in_channels(self) -> int:
        return int(self.metadata["in_channels"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def footprint_m(self) -> float | None:
        """Metres of ground across one training image; None for bundles made before footprints were recorded."""
        footprint = self.metadata.get("footprint")
        return float(footprint["metres"]) if footprint else None

    @property
    def training_gsd(self) -> float | None:
        """Metres per pixel of the training images (median), when the bundle records it."""
        value = (self.metadata.get("footprint") or {}).get("gsd_m")
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    @property
    def radiometry(self) -> dict | None:
        """The training inputs' source dtype and per-band percentiles (in its units); None for older bundles."""
        return self.metadata.get("input_radiometry")

    @property
    def has_pixels_onnx(self) -> bool:
        """True when ``model.onnx`` takes raw pixels (bundles before that took normalised tiles)."""
        return self.onnx_bytes is not None and self.metadata.get("onnx", {}).get("input", {}).get("name") == "pixels"


def validate_metadata(metadata: Any, source: str) -> None:
    if not isinstance(metadata, dict):
        raise BundleError(f"{source}: must hold a JSON object")
    for key, expected_type in REQUIRED_METADATA.items():
        if key not in metadata:
            raise BundleError(f"{source}: missing key {key!r}")
        value = metadata[key]
        if not isinstance(value, expected_type) or (expected_type is int and isinstance(value, bool)):
            raise BundleError(f"{source}: key {key!r} must be {getattr(expected_type, '__name__', expected_type)}, got {type(value).__name__}")
    if metadata["format_version"] > FORMAT_VERSION:
        raise BundleError(f"{source}: 'format_version' {metadata['format_version']} is newer than this SemBridge "
                          f"(reads up to {FORMAT_VERSION}); update SemBridge Studio")
    n_classes, n_channels = metadata["num_classes"], metadata["in_channels"]
    if len(metadata["class_names"]) != n_classes:
        raise BundleError(f"{source}: 'class_names' lists {len(metadata['class_names'])} classes but 'num_classes' is {n_classes}")
    if len(metadata["class_colours"]) != n_classes:
        raise BundleError(f"{source}: 'class_colours' has {len(metadata['class_colours'])} entries for {n_classes} classes")
    for colour in metadata["class_colours"]:
        try:
            hex_to_rgb(colour)
        except ValueError as error:
            raise BundleError(f"{source}: 'class_colours': {error}") from None
    if len(metadata["band_names"]) != n_channels:
        raise BundleError(f"{source}: 'band_names' lists {len(metadata['band_names'])} bands but 'in_channels' is {n_channels}")
    if not 1 <= metadata["tile_size"] <= MAX_TILE:
        raise BundleError(f"{source}: 'tile_size' {metadata['tile_size']} is beyond what SemBridge trains (1 to {MAX_TILE} px); "
                          "not a usable bundle")
    stats = metadata["channel_stats"]
    for part in ("mean", "std"):
        values = stats.get(part)
        if not isinstance(values, list) or len(values) != n_channels:
            raise BundleError(f"{source}: 'channel_stats.{part}' must list {n_channels} numbers (one per input channel)")
        if not all(_finite_number(value) for value in values):
            raise BundleError(f"{source}: 'channel_stats.{part}' must hold finite numbers, got {values}")
    if not all(value > 0 for value in stats["std"]):
        raise BundleError(f"{source}: 'channel_stats.std' must be above 0 for every channel, got {stats['std']}: "
                          "a zero spread would divide the inputs by zero (NaN probabilities); re-export the model")
    _validate_footprint(metadata.get("footprint"), source)
    _validate_radiometry(metadata.get("input_radiometry"), n_channels, source)


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _validate_footprint(footprint: Any, source: str) -> None:
    """Optional (bundles before footprints have none): metres across one training image, positive."""
    if footprint is None:
        return
    if not isinstance(footprint, dict) or not _finite_number(footprint.get("metres")) or footprint["metres"] <= 0:
        raise BundleError(f"{source}: 'footprint' must be an object with a positive number 'metres', got {footprint!r}"[:400])


def _validate_radiometry(radiometry: Any, n_channels: int, source: str) -> None:
    """Optional: the training inputs' source dtype and per-band percentiles (one row per input channel)."""
    if radiometry is None:
        return
    message = (f"{source}: 'input_radiometry' must hold 'source_dtype', 'percentiles' and 'values' "
               f"({n_channels} rows of finite numbers, one per percentile)")
    if not isinstance(radiometry, dict):
        raise BundleError(message)
    percentiles, values = radiometry.get("percentiles"), radiometry.get("values")
    if radiometry.get("source_dtype") not in KNOWN_DTYPES:
        raise BundleError(message)
    if not isinstance(percentiles, list) or not all(_finite_number(value) for value in percentiles) \
            or not isinstance(values, list) or len(values) != n_channels \
            or not all(isinstance(row, list) and len(row) == len(percentiles) and all(map(_finite_number, row)) for row in values):
        raise BundleError(message)


def _read_member(archive: zipfile.ZipFile, name: str, path: Path) -> bytes:
    """A member's bytes, refusing one that declares or turns out larger than any real bundle holds
    (a small zip can inflate to gigabytes), without ever holding more than the limit in memory."""
    limit = MEMBER_LIMITS[name]
    declared = archive.getinfo(name).file_size
    if declared > limit:
        raise BundleError(f"{path}: {name} declares {declared / 2**20:.0f} MiB, more than a bundle may hold "
                          f"({limit / 2**20:.0f} MiB); not a SemBridge bundle")
    with archive.open(name) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"{path}: {name} inflates beyond {limit / 2**20:.0f} MiB; not a SemBridge bundle")
    return data


def read_members(path: Path, required: tuple[str, ...], wanted: tuple[str, ...]) -> dict[str, bytes]:
    """The ``wanted`` zip members of the bundle at ``path`` that it has, after checking it has every ``required`` one."""
    if not path.is_file():
        raise BundleError(f"{path}: model bundle not found")
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{path}: not a SemBridge model bundle (not a zip file)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for member in required:
                if member not in names:
                    raise BundleError(f"{path}: bundle has no {member}")
            return {member: _read_member(archive, member, path) for member in wanted if member in names}
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as error:
        raise BundleError(f"{path}: damaged bundle ({error})") from None


def parse_metadata(path: Path, metadata_bytes: bytes) -> dict[str, Any]:
    source = f"{path} [{METADATA_NAME}]"
    try:
        metadata = json.loads(metadata_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{source}: not valid JSON ({error})") from None
    except RecursionError:
        raise BundleError(f"{source}: nested too deeply to be bundle metadata") from None
    validate_metadata(metadata, source)
    return metadata


def info_fields(path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments shared by BundleInfo and ModelBundle."""
    return dict(path=path, metadata=metadata, class_names=[str(name) for name in metadata["class_names"]],
                colours=[str(colour) for colour in metadata["class_colours"]], tile_size=int(metadata["tile_size"]),
                band_names=[str(name) for name in metadata["band_names"]])


def read_bundle_info(path) -> BundleInfo:
    """Open a ``.sembridge`` bundle's metadata and ONNX graph; needs neither PyTorch nor the weights' architecture."""
    path = Path(path)
    members = read_members(path, (METADATA_NAME, WEIGHTS_NAME), (METADATA_NAME, ONNX_NAME))
    metadata = parse_metadata(path, members[METADATA_NAME])
    return BundleInfo(**info_fields(path, metadata), onnx_bytes=members.get(ONNX_NAME))
