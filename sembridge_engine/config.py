"""Run configuration: one declarative, validated TOML file per run.

A run folder keeps the resolved ``config.toml`` so a GUI run can be re-run from the CLI and the
other way round. Relative paths are resolved against the folder of the file they come from.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import tomli_w

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "step")
DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")


class ConfigError(ValueError):
    """A config value is missing, mistyped or not one of the allowed values; names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass
class DataConfig:
    ms_path: str = ""
    rgb_path: str = ""
    band_preset: str = "sentinel2_eurosat13"
    custom_bands: list[str] = field(default_factory=list)
    custom_rgb: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    class_mapping: dict[str, str] = field(default_factory=dict)
    ms_tile_size: int = 64
    rgb_tile_size: int = 64
    rgb_split: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])
    ms_val_fraction: float = 0.2


@dataclass
class StageConfig:
    arch: str = "resnet34"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3


@dataclass
class MatcherConfig(StageConfig):
    epochs: int = 20
    embed_dim: int = 128
    temperature: float = 0.07


@dataclass
class StudentConfig(StageConfig):
    epochs: int = 60
    teacher_from: str = ""


@dataclass
class DistillConfig:
    loss: str = "kd"
    params: dict[str, Any] = field(default_factory=dict)
    pssm: bool = False
    pssm_params: dict[str, Any] = field(default_factory=dict)
    lambda1: float = 0.4
    ssm: bool = True
    dynm: bool = True
    ot1: bool = True
    ot2: bool = True
    gamma: float = 3.0
    heads: int = 8
    planner_width: int = 0      # 0 = the teacher's feature channels (the paper's form); smaller is cheaper
    e0: int = 10
    delta_e: int = 10
    e_mu: int = 5
    probe_size: int = 64


@dataclass
class TrainConfig:
    optimizer: str = "adam"
    weight_decay: float = 1e-4
    scheduler: str = "none"
    seed: int = 0
    device: str = "auto"
    workers: int = 0


@dataclass
class RunConfig:
    name: str = "run"
    output_dir: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    teacher: StageConfig = field(default_factory=StageConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def uses_teacher(self) -> bool:
        """Loss ``none`` without OT terms is the plain RGB baseline: no teacher, matcher or matching."""
        return self.distill.loss != "none" or self.distill.ot1 or self.distill.ot2

    @property
    def uses_matcher(self) -> bool:
        return self.uses_teacher and self.distill.ssm

    @property
    def uses_planner(self) -> bool:
        return self.uses_teacher and (self.distill.ot1 or self.distill.ot2)


PATH_KEYS = (("data", "ms_path"), ("data", "rgb_path"), ("student", "teacher_from"), ("", "output_dir"))


def _resolve(value: str, base_dir: Path | None) -> str:
    if not value or base_dir is None:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert a TOML/override value to the field's declared type or raise ConfigError."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(key, f"expected an integer, got {value!r}") from None
        if number != int(number):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return int(number)
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(key, f"expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        (item_type,) = typing.get_args(annotation)
        return [_coerce(key, item, item_type) for item in value]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a table {{key = value}}, got {value!r}")
        _, value_type = typing.get_args(annotation)
        if value_type is Any:
            return dict(value)
        return {str(k): _coerce(f"{key}.{k}", v, value_type) for k, v in value.items()}
    raise ConfigError(key, f"unsupported type {annotation!r}")


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(prefix.rstrip("."), f"expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}", f"unknown key; allowed keys: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = _build(annotation, data[name], f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(f"{prefix}{name}", data[name], annotation)
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any], base_dir: str | Path | None = None) -> RunConfig:
    """Build and validate a RunConfig; relative paths are resolved against ``base_dir``."""
    config = _build(RunConfig, data, "")
    base = Path(base_dir).resolve() if base_dir is not None else None
    for section, key in PATH_KEYS:
        holder = getattr(config, section) if section else config
        setattr(holder, key, _resolve(getattr(holder, key), base))
    validate(config)
    return config


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("config", f"file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("config", f"{path} is not valid TOML: {error}") from None
    return config_from_dict(data, path.parent)


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the config as TOML atomically (temp file then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(tomli_w.dumps(config_to_dict(config)).encode("utf-8"))
    tmp.replace(path)


def _parse_override_value(text: str) -> Any:
    """TOML literal if it parses (3, 1e-3, true, [..], {..}, "s"), else the raw string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """Return a copy of ``config`` with ``section.key=value`` overrides applied and validated.

    Values are coerced to the field's type; ``distill.params.tau=4`` sets one entry of a table.
    """
    data = config_to_dict(config)
    for override in overrides:
        key, sep, raw = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(override, "expected key=value, e.g. student.epochs=3")
        parts = key.split(".")
        node: Any = data
        cls: Any = RunConfig
        for depth, part in enumerate(parts[:-1]):
            if dataclasses.is_dataclass(cls):
                names = [f.name for f in dataclasses.fields(cls)]
                if part not in names:
                    raise ConfigError(key, f"unknown key {part!r}; allowed keys: {', '.join(names)}")
                cls = typing.get_type_hints(cls)[part]
            elif typing.get_origin(cls) is dict:
                node.setdefault(part, {})
                cls = dict
            else:
                raise ConfigError(key, f"{'.'.join(parts[:depth + 1])} is not a table")
            node = node[part]
        leaf = parts[-1]
        if dataclasses.is_dataclass(cls):
            names = [f.name for f in dataclasses.fields(cls)]
            if leaf not in names:
                raise ConfigError(key, f"unknown key; allowed keys: {', '.join(names)}")
            if dataclasses.is_dataclass(typing.get_type_hints(cls)[leaf]):
                raise ConfigError(key, "is a section; set one of its keys, e.g. student.epochs=3")
        elif not isinstance(node, dict):
            raise ConfigError(key, "is not a table")
        value = _parse_override_value(raw.strip())
        if dataclasses.is_dataclass(cls) and typing.get_type_hints(cls)[leaf] is str and not isinstance(value, str):
            value = raw.strip()
        node[leaf] = value
    return config_from_dict(data, None)


def _check_choice(key: str, value: Any, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(key, f"{value!r} is not allowed; choose one of: {', '.join(allowed)}")


def validate(config: RunConfig) -> None:
    """Check ranges and registry names; raises ConfigError naming the key and allowed values."""
    from sembridge_engine.data.bands import BAND_PRESETS
    from sembridge_engine.distill.losses import KD_LOSSES
    from sembridge_engine.models.backbones import available_backbones

    data = config.data
    _check_choice("data.band_preset", data.band_preset, [*BAND_PRESETS, "custom"])
    if data.band_preset == "custom":
        if not data.custom_bands:
            raise ConfigError("data.custom_bands", "band_preset 'custom' needs the list of band names")
        if len(data.custom_rgb) != 3 or not set(data.custom_rgb) <= set(data.custom_bands):
            raise ConfigError("data.custom_rgb", "needs three names from data.custom_bands (R, G, B)")
    for key in ("ms_tile_size", "rgb_tile_size"):
        if not 16 <= getattr(data, key) <= 1024:
            raise ConfigError(f"data.{key}", "must be between 16 and 1024 pixels")
    if len(data.rgb_split) != 3 or any(f < 0 for f in data.rgb_split) or abs(sum(data.rgb_split) - 1) > 1e-6:
        raise ConfigError("data.rgb_split", "needs three non-negative fractions train, val, test summing to 1")
    if data.rgb_split[0] <= 0 or data.rgb_split[1] <= 0 or data.rgb_split[2] <= 0:
        raise ConfigError("data.rgb_split", "train, val and test fractions must all be above 0")
    if not 0 < data.ms_val_fraction < 1:
        raise ConfigError("data.ms_val_fraction", "must be between 0 and 1 (exclusive)")
    backbones = available_backbones()
    for section in ("teacher", "matcher", "student"):
        stage = getattr(config, section)
        _check_choice(f"{section}.arch", stage.arch, backbones)
        if stage.epochs < 0:
            raise ConfigError(f"{section}.epochs", "must be 0 or more")
        if stage.batch_size < 2:
            raise ConfigError(f"{section}.batch_size", "must be at least 2")
        if not stage.lr > 0:
            raise ConfigError(f"{section}.lr", "must be above 0")
    if config.student.epochs < 1:
        raise ConfigError("student.epochs", "must be at least 1")
    if config.matcher.temperature <= 0:
        raise ConfigError("matcher.temperature", "must be above 0")
    if config.matcher.embed_dim < 2:
        raise ConfigError("matcher.embed_dim", "must be at least 2")
    distill = config.distill
    _check_choice("distill.loss", distill.loss, KD_LOSSES)
    spec = KD_LOSSES[distill.loss]
    for key in distill.params:
        if key not in spec.defaults:
            allowed = ", ".join(spec.defaults) or "none (this loss takes no parameters)"
            raise ConfigError(f"distill.params.{key}", f"not a parameter of loss {distill.loss!r}; allowed: {allowed}")
    if distill.pssm and not spec.supports_pssm:
        supported = ", ".join(name for name, item in KD_LOSSES.items() if item.supports_pssm)
        raise ConfigError("distill.pssm", f"PSSM cannot wrap loss {distill.loss!r}; it wraps: {supported}")
    if not 0 <= distill.lambda1 <= 1:
        raise ConfigError("distill.lambda1", "must be between 0 and 1 (lambda2 = 1 - lambda1)")
    if distill.gamma <= 0:
        raise ConfigError("distill.gamma", "must be above 0")
    if distill.heads < 1:
        raise ConfigError("distill.heads", "must be at least 1")
    if distill.planner_width < 0:
        raise ConfigError("distill.planner_width", "must be 0 (= the teacher's channels) or a positive width")
    if distill.e0 < 0 or distill.delta_e < 1 or distill.e_mu < 0:
        raise ConfigError("distill.e0", "DynM schedule needs e0 >= 0, delta_e >= 1, e_mu >= 0")
    if distill.probe_size < 2:
        raise ConfigError("distill.probe_size", "must be at least 2")
    train = config.train
    _check_choice("train.optimizer", train.optimizer, OPTIMIZERS)
    _check_choice("train.scheduler", train.scheduler, SCHEDULERS)
    _check_choice("train.device", train.device, DEVICE_NAMES)
    if train.weight_decay < 0:
        raise ConfigError("train.weight_decay", "must be 0 or more")
    if train.workers < 0:
        raise ConfigError("train.workers", "must be 0 or more (0 = automatic)")


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: RunConfig | Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a config (or of any part of one), for caching."""
    data = config_to_dict(config) if isinstance(config, RunConfig) else config
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()
