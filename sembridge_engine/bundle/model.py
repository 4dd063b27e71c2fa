"""Bundles with PyTorch: write a trained model as a bundle, load one back as an eval-mode model."""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sembridge_engine import __version__ as ENGINE_VERSION
from sembridge_engine.atomic import atomic_output

from .format import (FORMAT_VERSION, METADATA_NAME, ONNX_NAME, WEIGHTS_NAME, BundleError, BundleInfo, info_fields,
                     parse_metadata, read_members, validate_metadata)

if TYPE_CHECKING:
    from sembridge_engine.data.transforms import ChannelStats


@dataclass(kw_only=True)
class ModelBundle(BundleInfo):
    """A loaded bundle: the student in eval mode on the CPU plus everything needed to preprocess."""

    model: torch.nn.Module
    channel_stats: "ChannelStats"


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


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def write_bundle(out: Path, model: torch.nn.Module, metadata: dict[str, Any], *, check_onnx: bool = True) -> Path:
    """Write ``model`` and its ``metadata`` as a bundle at ``out``, atomically.

    With ``check_onnx`` the bundle also carries ``model.onnx``, a graph from raw pixels to class
    probabilities (see ``onnx_export``); writing fails if onnxruntime disagrees with the PyTorch path,
    and the measured differences and the graph's input contract are stored in the metadata.
    The finished file is loaded back (as any user would) before it is renamed into place, so a
    bundle that cannot be loaded is never written.
    """
    from safetensors.torch import save

    out = Path(out)
    metadata = dict(metadata, format_version=FORMAT_VERSION, engine_version=ENGINE_VERSION)
    validate_metadata(metadata, f"{out} [{METADATA_NAME}]")
    broken = [name for name, tensor in model.state_dict().items()
              if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if broken:
        raise BundleError(f"{out}: the model holds NaN or infinite weights ({len(broken)} tensors, e.g. {broken[0]!r}); "
                          "it was not exported (the training diverged)")
    members: dict[str, bytes] = {WEIGHTS_NAME: save({name: tensor.contiguous() for name, tensor in model.state_dict().items()})}
    if check_onnx:
        from .onnx_export import export_checked_pixels_onnx

        onnx_bytes, metadata["onnx"] = export_checked_pixels_onnx(model, metadata, str(out))
        members[ONNX_NAME] = onnx_bytes
    members[METADATA_NAME] = json.dumps(metadata, indent=2).encode("utf-8")
    with atomic_output(out) as temporary:
        temporary.write_bytes(_zip_bytes(members))
        load_bundle(temporary)
    return out


def load_bundle(path) -> ModelBundle:
    """Open a ``.sembridge`` bundle: JSON + safetensors only (no pickle, no code), validated against its architecture."""
    from safetensors.torch import load

    from sembridge_engine.data.transforms import ChannelStats

    path = Path(path)
    members = read_members(path, (METADATA_NAME, WEIGHTS_NAME), (METADATA_NAME, WEIGHTS_NAME, ONNX_NAME))
    metadata = parse_metadata(path, members[METADATA_NAME])
    source = f"{path} [{METADATA_NAME}]"
    arch = metadata["architecture"]
    model = build_model(arch, metadata["in_channels"], metadata["num_classes"], source)
    weights_source = f"{path} [{WEIGHTS_NAME}]"
    try:
        tensors = load(members[WEIGHTS_NAME])
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise BundleError(f"{weights_source}: not a readable safetensors file ({error})") from None
    load_weights(model, tensors, metadata["num_classes"], weights_source, arch)
    return ModelBundle(**info_fields(path, metadata), onnx_bytes=members.get(ONNX_NAME), model=model,
                       channel_stats=ChannelStats.from_dict(metadata["channel_stats"]))
