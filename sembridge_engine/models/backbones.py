"""Classification backbones over torchvision with taps for distillation.

Every architecture is one `ArchSpec` line in `BACKBONES`: the torchvision factory, the dotted
path of the first conv (replaced to accept any number of bands), the ordered trunk modules,
the module after which the intermediate map is tapped, and the classifier. The trunk is split
at the tap into two `nn.Sequential`s so `forward_features` runs it exactly once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models


@dataclass
class Features:
    """All taps of one forward pass (the teacher's are computed under no_grad by the caller)."""

    feature_map: Tensor   # last conv map (B, C_f, H_f, W_f)
    intermediate: Tensor  # intermediate map (B, C_i, H_i, W_i), stride 16
    embedding: Tensor     # global-average-pooled feature map (B, C_f)
    logits: Tensor        # (B, num_classes)


@dataclass(frozen=True)
class ArchSpec:
    """Where the parts of a torchvision classifier live (dotted module paths)."""

    factory: Callable[..., nn.Module]
    first_conv: str
    trunk: tuple[str, ...]
    tap: str
    classifier: str


BACKBONES: dict[str, ArchSpec] = {
    "resnet34": ArchSpec(models.resnet34, "conv1", ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"), "layer3", "fc"),
    "mobilenet_v2": ArchSpec(models.mobilenet_v2, "features.0.0", ("features",), "features.13", "classifier"),
    "shufflenet_v2_x1_0": ArchSpec(models.shufflenet_v2_x1_0, "conv1.0", ("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5"), "stage3", "fc"),
    "shufflenet_v2_x0_5": ArchSpec(models.shufflenet_v2_x0_5, "conv1.0", ("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5"), "stage3", "fc"),
}


def available_backbones() -> list[str]:
    return sorted(BACKBONES)


def _replace_first_conv(model: nn.Module, path: str, in_channels: int) -> None:
    """Swap the first conv for one taking `in_channels`, keeping every other hyper-parameter."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, name)
    if not isinstance(old, nn.Conv2d):
        raise TypeError(f"{path} is {type(old).__name__}, expected Conv2d")
    new = nn.Conv2d(in_channels, old.out_channels, kernel_size=old.kernel_size, stride=old.stride,
                    padding=old.padding, dilation=old.dilation, groups=old.groups,
                    bias=old.bias is not None, padding_mode=old.padding_mode)
    setattr(parent, name, new)


def _trunk_modules(model: nn.Module, spec: ArchSpec) -> list[tuple[str, nn.Module]]:
    """Ordered trunk modules, expanding a container when the tap lies inside it."""
    ordered: list[tuple[str, nn.Module]] = []
    for path in spec.trunk:
        module = model.get_submodule(path)
        if spec.tap.startswith(path + "."):
            ordered.extend((f"{path}.{child}", sub) for child, sub in module.named_children())
        else:
            ordered.append((path, module))
    names = [name for name, _ in ordered]
    if spec.tap not in names:
        raise ValueError(f"tap {spec.tap!r} is not a trunk module of {spec.factory.__name__}")
    return ordered


def _sequential(items: list[tuple[str, nn.Module]]) -> nn.Sequential:
    return nn.Sequential(OrderedDict((name.replace(".", "_"), module) for name, module in items))


class PretrainedWeightsError(ValueError):
    """Pretrained weights were asked for but cannot be used; the message says where to put them."""


def imagenet_weights_path(arch: str) -> Path:
    """Where torchvision keeps this architecture's ImageNet weights once downloaded (never fetched here)."""
    weights = models.get_model_weights(BACKBONES[arch].factory).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _pretrained_state(arch: str, pretrained: str) -> dict[str, Tensor]:
    """The torchvision state dict ``pretrained`` names: "imagenet" (from the torchvision cache) or a file."""
    if pretrained == "imagenet":
        path = imagenet_weights_path(arch)
        if not path.is_file():
            raise PretrainedWeightsError(
                f"ImageNet weights for {arch} are not on this machine (looked for {path}); SemBridge never downloads "
                f"at run time. Put the file there (torchvision.models.{BACKBONES[arch].factory.__name__}(weights='DEFAULT') "
                "downloads it on a machine with internet), give a weights file path instead of 'imagenet', "
                "or set pretrained = '' to train from scratch.")
    else:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(f"pretrained weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise several types for damaged files
        raise PretrainedWeightsError(f"{path}: not a readable weights file ({type(error).__name__}: {error})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(value, Tensor) for value in state.values()):
        raise PretrainedWeightsError(f"{path}: holds no state dict of tensors")
    return state


def _adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """RGB filters for ``in_channels`` bands: tiled over the bands and scaled by 3 / bands (as timm's
    adapt_input_conv does), so a band-averaged input gives the activations the RGB filters gave."""
    if weight.shape[1] == in_channels:
        return weight
    repeats = -(-in_channels // weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


def _load_pretrained(model: nn.Module, spec: ArchSpec, arch: str, pretrained: str, in_channels: int) -> None:
    """Load torchvision weights into ``model`` (first conv adapted to the bands); the classifier keeps
    its fresh initialisation unless its shape matches."""
    state = dict(_pretrained_state(arch, pretrained))
    first = f"{spec.first_conv}.weight"
    if first in state:
        state[first] = _adapt_first_conv(state[first], in_channels)
    expected = model.state_dict()
    mismatched = [key for key, value in state.items() if key in expected and value.shape != expected[key].shape]
    for key in mismatched:
        if not key.startswith(spec.classifier + "."):
            raise PretrainedWeightsError(f"weights for {arch}: tensor {key!r} has shape {list(state[key].shape)}, "
                                         f"expected {list(expected[key].shape)}; are they for another architecture?")
        del state[key]
    missing, unexpected = model.load_state_dict(state, strict=False)
    trunk_missing = [key for key in missing if not key.startswith(spec.classifier + ".")]
    if trunk_missing or unexpected:
        raise PretrainedWeightsError(f"weights do not fit {arch}: {len(trunk_missing)} missing tensors (e.g. "
                                     f"{(trunk_missing or ['-'])[0]!r}), {len(unexpected)} unexpected (e.g. "
                                     f"{(unexpected or ['-'])[0]!r})")


class Backbone(nn.Module):
    """A classifier whose forward returns logits only (ONNX-friendly) plus all distillation taps."""

    def __init__(self, arch: str, in_channels: int, num_classes: int, pretrained: str = ""):
        super().__init__()
        if arch not in BACKBONES:
            raise ValueError(f"unknown backbone {arch!r}; choose one of {available_backbones()}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        spec = BACKBONES[arch]
        self.arch = arch
        self.in_channels = in_channels
        self.num_classes = num_classes
        model = spec.factory(weights=None, num_classes=max(num_classes, 1))
        _replace_first_conv(model, spec.first_conv, in_channels)
        if pretrained:
            _load_pretrained(model, spec, arch, pretrained, in_channels)
        ordered = _trunk_modules(model, spec)
        split = [name for name, _ in ordered].index(spec.tap) + 1
        self.to_intermediate = _sequential(ordered[:split])
        self.to_feature_map = _sequential(ordered[split:])
        # num_classes == 0 gives a headless encoder (logits are the embedding), used by the matcher.
        self.classifier = model.get_submodule(spec.classifier) if num_classes else nn.Identity()
        self.intermediate_channels, self.feature_channels = self._probe_channels()
        self.embedding_dim = self.feature_channels

    @torch.no_grad()
    def _probe_channels(self) -> tuple[int, int]:
        was_training = self.training
        self.eval()
        intermediate = self.to_intermediate(torch.zeros(1, self.in_channels, 64, 64))
        feature_map = self.to_feature_map(intermediate)
        self.train(was_training)
        return intermediate.shape[1], feature_map.shape[1]

    def forward(self, x: Tensor) -> Tensor:
        feature_map = self.to_feature_map(self.to_intermediate(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(feature_map, 1), 1))

    def forward_features(self, x: Tensor) -> Features:
        intermediate = self.to_intermediate(x)
        feature_map = self.to_feature_map(intermediate)
        embedding = torch.flatten(F.adaptive_avg_pool2d(feature_map, 1), 1)
        return Features(feature_map, intermediate, embedding, self.classifier(embedding))


def build_backbone(arch: str, in_channels: int, num_classes: int, pretrained: str = "") -> Backbone:
    """A backbone, randomly initialised or (``pretrained``: "imagenet" or a weights file) starting from
    torchvision weights; it never downloads anything."""
    return Backbone(arch, in_channels, num_classes, pretrained)
