"""Model bundles: one ``.sembridge`` zip a user can copy, share and load without running any code.

A bundle holds ``weights.safetensors`` (tensors only), ``metadata.json`` (architecture, classes and
colours, bands, normalisation, tile size, training summary, versions) and, unless skipped,
``model.onnx`` for use outside SemBridge, checked against PyTorch with onnxruntime when written.
This module knows the format; training writes bundles through it and labelling reads them.
"""
from __future__ import annotations

import io
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sembridge_engine import __version__ as ENGINE_VERSION
from sembridge_engine.atomic import atomic_output
from sembridge_engine.colours import hex_to_rgb

if TYPE_CHECKING:
    from sembridge_engine.data.transforms import ChannelStats

FORMAT_VERSION = 1
BUNDLE_SUFFIX = ".sembridge"
WEIGHTS_NAME = "weights.safetensors"
METADATA_NAME = "metadata.json"
ONNX_NAME = "model.onnx"
ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-3
ONNX_CHECK_BATCHES = (1, 4)
# Far above any real bundle (a ResNet34's weights are ~85 MB), far below what would exhaust memory.
MEMBER_LIMITS = {METADATA_NAME: 16 * 2**20, WEIGHTS_NAME: 1024 * 2**20, ONNX_NAME: 1024 * 2**20}

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
class ModelBundle:
    """A loaded bundle: the student in eval mode on the CPU plus everything needed to preprocess."""

    path: Path
    model: torch.nn.Module
    metadata: dict[str, Any]
    class_names: list[str]
    colours: list[str]
    tile_size: int
    channel_stats: "ChannelStats"
    band_names: list[str]

    @property
    def in_channels(self) -> int:
        return int(self.metadata["in_channels"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def build_model(arch: str, in_channels: int, num_classes: int, source: str) -> torch.nn.Module:
    from sembridge_engine.models.backbones import available_backbones, build_backbone

    if arch not in available_backbones():
        raise BundleError(f"{source}: 'architecture' {arch!r} is not one of {', '.join(available_backbones())}")
    return build_backbone(arch, in_channels, num_classes)


def _check_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], num_classes: int, source: str, arch: str) -> None:
    """Same names and shapes as the architecture expects, with a specific message for a class-count mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise BundleError(f"{source}: tensor {missing[0]!r} is missing ({len(missing)} missing in all) for architecture {arch!r}")
    if unexpected:
        raise BundleError(f"{source}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} in all) for architecture {arch!r}")
    for name, reference in expected.items():
        got = tuple(tensors[name].shape)
        want = tuple(reference.shape)
        if got == want:
            continue
        if got and want and want[0] == num_classes and got[1:] == want[1:]:
            raise BundleError(
                f"{source}: classifier tensor {name!r} has {got[0]} outputs but the metadata lists {num_classes} classes"
            )
        raise BundleError(f"{source}: tensor {name!r} has shape {list(got)}, architecture {arch!r} expects {list(want)}")


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], num_classes: int, source: str, arch: str) -> None:
    _check_tensors(model, tensors, num_classes, source, arch)
    model.load_state_dict(tensors, strict=True)
    model.eval()


def export_onnx(model: torch.nn.Module, in_channels: int, tile_size: int) -> bytes:
    """A static ONNX graph with a dynamic batch axis (legacy exporter; the dynamo exporter if that is gone)."""
    example = torch.zeros(1, in_channels, tile_size, tile_size)
    buffer = io.BytesIO()
    options = dict(input_names=["input"], output_names=["logits"],
                   dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=ONNX_OPSET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            torch.onnx.export(model, (example,), buffer, dynamo=False, **options)
        except (TypeError, RuntimeError, NotImplementedError):
            buffer = io.BytesIO()
            torch.onnx.export(model, (example,), buffer, dynamo=True, input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=ONNX_OPSET)
    return buffer.getvalue()


def onnx_max_logit_difference(onnx_bytes: bytes, model: torch.nn.Module, in_channels: int, tile_size: int) -> float:
    """Largest |logit(onnxruntime) - logit(PyTorch)| over a few seeded inputs of the model's real input shape."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch in ONNX_CHECK_BATCHES:
        inputs = torch.randn(batch, in_channels, tile_size, tile_size, generator=generator)
        with torch.inference_mode():
            expected = model(inputs).numpy()
        got = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
        worst = max(worst, float(abs(got - expected).max()))
    return worst


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def write_bundle(out: Path, model: torch.nn.Module, metadata: dict[str, Any], *, check_onnx: bool = True) -> Path:
    """Write ``model`` and its ``metadata`` as a bundle at ``out``, atomically.

    With ``check_onnx`` the bundle also carries ``model.onnx``; writing fails if onnxruntime's logits
    differ from PyTorch's by 1e-3 or more, and the measured difference is stored in the metadata.
    The finished file is loaded back (as any user would) before it is renamed into place, so a
    bundle that cannot be loaded is never written.
    """
    from safetensors.torch import save

    out = Path(out)
    metadata = dict(metadata, format_version=FORMAT_VERSION, engine_version=ENGINE_VERSION)
    _validate_metadata(metadata, f"{out} [{METADATA_NAME}]")
    in_channels, tile_size = int(metadata["in_channels"]), int(metadata["tile_size"])
    broken = [name for name, tensor in model.state_dict().items()
              if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if broken:
        raise BundleError(f"{out}: the model holds NaN or infinite weights ({len(broken)} tensors, e.g. {broken[0]!r}); "
                          "it was not exported (the training diverged)")
    members: dict[str, bytes] = {WEIGHTS_NAME: save({name: tensor.contiguous() for name, tensor in model.state_dict().items()})}
    if check_onnx:
        onnx_bytes = export_onnx(model, in_channels, tile_size)
        difference = onnx_max_logit_difference(onnx_bytes, model, in_channels, tile_size)
        if not difference < ONNX_TOLERANCE:
            raise BundleError(f"{out}: ONNX export differs from PyTorch by {difference:.3g} in logits (limit {ONNX_TOLERANCE:g})")
        metadata["onnx"] = {"file": ONNX_NAME, "opset": ONNX_OPSET, "max_abs_logit_diff": difference,
                            "checked_batches": list(ONNX_CHECK_BATCHES), "input": "input", "output": "logits"}
        members[ONNX_NAME] = onnx_bytes
    members[METADATA_NAME] = json.dumps(metadata, indent=2).encode("utf-8")
    with atomic_output(out) as temporary:
        temporary.write_bytes(_zip_bytes(members))
        load_bundle(temporary)
    return out


def _validate_metadata(metadata: Any, source: str) -> None:
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
    if metadata["tile_size"] < 1:
        raise BundleError(f"{source}: 'tile_size' must be positive, got {metadata['tile_size']}")
    stats = metadata["channel_stats"]
    for part in ("mean", "std"):
        values = stats.get(part)
        if not isinstance(values, list) or len(values) != n_channels:
            raise BundleError(f"{source}: 'channel_stats.{part}' must list {n_channels} numbers (one per input channel)")


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


def load_bundle(path) -> ModelBundle:
    """Open a ``.sembridge`` bundle: JSON + safetensors only (no pickle, no code), validated against its architecture."""
    from safetensors.torch import load

    from sembridge_engine.data.transforms import ChannelStats

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: model bundle not found")
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{path}: not a SemBridge model bundle (not a zip file)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for member in (METADATA_NAME, WEIGHTS_NAME):
                if member not in names:
                    raise BundleError(f"{path}: bundle has no {member}")
            metadata_bytes = _read_member(archive, METADATA_NAME, path)
            weights_bytes = _read_member(archive, WEIGHTS_NAME, path)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as error:
        raise BundleError(f"{path}: damaged bundle ({error})") from None
    source = f"{path} [{METADATA_NAME}]"
    try:
        metadata = json.loads(metadata_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{source}: not valid JSON ({error})") from None
    except RecursionError:
        raise BundleError(f"{source}: nested too deeply to be bundle metadata") from None
    _validate_metadata(metadata, source)
    arch = metadata["architecture"]
    model = build_model(arch, metadata["in_channels"], metadata["num_classes"], source)
    weights_source = f"{path} [{WEIGHTS_NAME}]"
    try:
        tensors = load(weights_bytes)
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise BundleError(f"{weights_source}: not a readable safetensors file ({error})") from None
    load_weights(model, tensors, metadata["num_classes"], weights_source, arch)
    return ModelBundle(
        path=path,
        model=model,
        metadata=metadata,
        class_names=[str(name) for name in metadata["class_names"]],
        colours=[str(colour) for colour in metadata["class_colours"]],
        tile_size=int(metadata["tile_size"]),
        channel_stats=ChannelStats.from_dict(metadata["channel_stats"]),
        band_names=[str(name) for name in metadata["band_names"]],
    )
