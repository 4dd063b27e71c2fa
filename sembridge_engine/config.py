"""Run configuration: one declarative, validated TOML file per run.

Each field carries its SettingSpec (label, one-line help, bounds, choices) beside its default, so
the rules and the words the wizard shows live in one place; those help texts are most of this
file's length.

A run folder keeps the resolved ``config.toml`` so a GUI run can be re-run from the CLI and the
other way round. Relative paths are resolved against the folder of the file they come from.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping


from sembridge_engine.atomic import write_text_atomic

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "step")
DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536
MAX_TILE = 1024


class ConfigError(ValueError):
    """A config value is missing, mistyped or not one of the allowed values; names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def _backbones() -> list[str]:
    from sembridge_engine.models.backbones import available_backbones

    return available_backbones()


def _kd_losses() -> list[str]:
    from sembridge_engine.distill.losses import KD_LOSSES

    return list(KD_LOSSES)


def _band_presets() -> list[str]:
    from sembridge_engine.data.bands import BAND_PRESETS

    return [*BAND_PRESETS, "custom"]


@dataclass(frozen=True)
class SettingSpec:
    """What a config field means and which values it takes: read by validation and by the wizard.

    Numbers must be finite and within [minimum, maximum] (``above`` makes the minimum exclusive);
    ``choices`` lists the allowed strings (a callable for registries, read when needed).
    """

    label: str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    choices: tuple[str, ...] | Callable[[], list[str]] | None = None

    def allowed(self) -> list[str] | None:
        if self.choices is None:
            return None
        return list(self.choices() if callable(self.choices) else self.choices)

    def check(self, key: str, value: Any) -> None:
        allowed = self.allowed()
        if allowed is not None and value not in allowed:
            raise ConfigError(key, f"{value!r} is not allowed; choose one of: {', '.join(allowed)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, got {value!r}")
        low_ok = self.minimum is None or (value > self.minimum if self.above else value >= self.minimum)
        if low_ok and (self.maximum is None or value <= self.maximum):
            return
        low = None if self.minimum is None else f"{'above' if self.above else 'at least'} {self.minimum:g}"
        high = None if self.maximum is None else f"at most {self.maximum:g}"
        if low and high and not self.above:
            message = f"must be between {self.minimum:g} and {self.maximum:g}"
        else:
            message = "must be " + " and ".join(part for part in (low, high) if part)
        raise ConfigError(key, f"{message}, got {value!r}")


def setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, label: str, help: str,
            **rules: Any) -> Any:
    """A dataclass field carrying its SettingSpec (bounds, choices, label, one-line help)."""
    return field(default=default, default_factory=factory, metadata={"spec": SettingSpec(label, help, **rules)})


def setting_spec(cls: type, name: str) -> SettingSpec:
    """The SettingSpec of field ``name`` of a config section class."""
    for item in dataclasses.fields(cls):
        if item.name == name:
            return item.metadata["spec"]
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def spec_of(key: str) -> SettingSpec:
    """The SettingSpec of a dotted key such as ``data.ms_tile_size``."""
    cls: Any = RunConfig
    *sections, leaf = key.split(".")
    for section in sections:
        cls = typing.get_type_hints(cls)[section]
    return setting_spec(cls, leaf)


TILE_HELP = ("Tiles are resized to this many pixels per side before training. Larger keeps finer detail but "
             "memory and time grow with its square; the archive's own tile size is a good start.")


@dataclass
class DataConfig:
    ms_path: str = setting("", label="MS archive",
                           help="The multispectral tiles the teacher learns from: a folder with one sub-folder of "
                           "GeoTIFF tiles per class, or a CSV manifest (path,labels) for tiles with several labels.")
    rgb_path: str = setting("", label="RGB images",
                            help="The RGB images the student learns from, one sub-folder per class (PNG, JPEG, TIFF, "
                            "GeoTIFF, any size). They need not show the places the MS tiles show.")
    band_preset: str = setting("sentinel2_eurosat13", label="Band layout", choices=_band_presets,
                               help="Which band is which inside the MS files, and which three make the pseudo-RGB the "
                               "matcher compares with RGB images. Pick your archive's sensor; 'custom' for another.")
    custom_bands: list[str] = setting(factory=list, label="Custom band names",
                                      help="For a custom layout: the band names in the order the files store them, "
                                      "e.g. B2, B3, B4, B8.")
    custom_rgb: list[str] = setting(factory=list, label="Custom red, green, blue",
                                    help="For a custom layout: the three band names that hold red, green and blue.")
    classes: list[str] = setting(factory=list, label="Classes to learn",
                                 help="The classes the student learns (empty: every class both archives share). "
                                 "Leave a class out when it has too few images to learn.")
    class_mapping: dict[str, str] = setting(factory=dict, label="Class name mapping",
                                            help="RGB folder name -> MS class name, where the two archives name a class "
                                            "differently; several RGB folders may map to one MS class.")
    ms_tile_size: int = setting(64, label="MS tile size (px)", minimum=16, maximum=MAX_TILE, help=TILE_HELP)
    rgb_tile_size: int = setting(64, label="RGB tile size (px)", minimum=16, maximum=MAX_TILE, help=TILE_HELP)
    rgb_gsd: float = setting(0.0, label="RGB ground resolution (m/px)", minimum=0, maximum=10_000,
                             help="Metres per pixel of the RGB images where they are not georeferenced (0 = unknown). "
                             "The model records its footprint on the ground from it, so maps are labelled at the "
                             "scale it was trained at; GeoTIFF images give their own.")
    rgb_split: list[float] = setting(factory=lambda: [0.6, 0.2, 0.2], label="RGB train / validation / test split",
                                     help="Shares of each class's RGB images used to train, to pick the best epoch and "
                                     "for the final test. Give the test more when you need a firmer accuracy figure.")
    ms_val_fraction: float = setting(0.2, label="MS validation share", minimum=0, maximum=1, above=True,
                                     help="Share of each class's MS tiles held out to pick the teacher's best epoch; "
                                     "lower it for a small archive.")
    memory_budget_gb: float = setting(0.0, label="Tile memory budget (GB)", minimum=0, maximum=1_000_000,
                                      help="Decoded tiles stay in memory while they fit in this many GB; a larger "
                                      "archive is read from an on-disk tile store built once in the cache folder. "
                                      "0 = half of this machine's memory (shared by the processes of a torchrun job).")


@dataclass
class StageConfig:
    arch: str = setting("resnet34", label="Network", choices=_backbones,
                        help="The network (a torchvision backbone). ResNet34 is the most accurate and slowest; "
                        "MobileNetV2 and ShuffleNetV2 train several times faster on a CPU.")
    epochs: int = setting(30, label="Epochs", minimum=0, maximum=MAX_EPOCHS,
                          help="Passes over the training tiles. More learn more but take longer; 0 skips training "
                          "(a reused or untrained model). On a small archive (a few hundred tiles) an epoch is only a "
                          "few steps: give the teacher 100 or more.")
    batch_size: int = setting(64, label="Batch size", minimum=2, maximum=MAX_BATCH,
                              help="Tiles per training step. Lower it if memory runs out; a GPU is faster with more.")
    lr: float = setting(1e-3, label="Learning rate", minimum=0, maximum=10, above=True,
                        help="Step size of the optimiser; 0.001 suits Adam. Lower it if the loss jumps about, raise it "
                        "if training stalls.")
    pretrained: str = setting("", label="Start from pretrained weights",
                              help="'' trains from scratch; 'imagenet' starts from torchvision's ImageNet weights "
                              "if they are in the torchvision cache (never downloaded here); or a weights file path. "
                              "The first layer is adapted to the band count.")


@dataclass
class MatcherConfig(StageConfig):
    epochs: int = setting(20, label="Epochs", minimum=0, maximum=MAX_EPOCHS,
                          help="Passes over the MS tiles to train the matcher, which pairs RGB images with similar MS "
                          "tiles before the student starts (SSM).")
    embed_dim: int = setting(128, label="Embedding width", minimum=2, maximum=4096,
                             help="Width of the space in which the matcher compares MS tiles and RGB images; the "
                             "default suits most archives.")
    temperature: float = setting(0.07, label="Contrastive temperature (tau)", minimum=0, maximum=10, above=True,
                                 help="Sharpness of the matcher's contrastive (InfoNCE) loss; CLIP's 0.07 rarely needs "
                                 "changing.")


@dataclass
class StudentConfig(StageConfig):
    epochs: int = setting(60, label="Epochs", minimum=1, maximum=MAX_EPOCHS,
                          help="Passes over the RGB training images; the re-matching schedule counts these epochs.")
    teacher_from: str = setting("", label="Reuse teacher from run",
                                help="A finished run whose teacher is reused instead of trained again, and its matcher "
                                "too unless this run sets other matcher or training settings; its MS archive and band "
                                "layout must be this run's.")
    use_teacher_cache: bool = setting(True, label="Reuse a cached teacher and matcher",
                                      help="A teacher and matcher trained before on exactly these MS tiles with these "
                                      "settings are taken from the cache instead of trained again. Untick to train "
                                      "them afresh, e.g. to see how much they vary.")


@dataclass
class DistillConfig:
    loss: str = setting("kd", label="Distillation loss", choices=_kd_losses,
                        help="How the student imitates its matched MS teacher; 'kd' is the paper's. 'none' with both "
                        "alignment terms off trains a plain RGB baseline to compare with.")
    params: dict[str, Any] = setting(factory=dict, label="Loss parameters",
                                     help="Settings of the chosen loss; the defaults come from its paper.")
    pssm: bool = setting(False, label="Distil only where it helps (PSSM)",
                         help="Per-sample mask: distil only where the student is wrong and the teacher agrees enough. "
                         "Try it when the teacher is weak on some classes.")
    pssm_params: dict[str, Any] = setting(factory=dict, label="PSSM parameters",
                                          help="threshold: how much the teacher must agree; keep_correct: keep the "
                                          "samples the student already gets right.")
    lambda1: float = setting(0.4, label="Distillation weight (lambda1)", minimum=0, maximum=1,
                             help="Share of the distillation term in the student's loss; the alignment terms get the "
                             "rest (lambda2 = 1 - lambda1). The paper uses 0.4; lower it when the teacher is poor.")
    ssm: bool = setting(True, label="Initial matching (SSM)",
                        help="Before training, pair each RGB image with the most similar MS tile of its class (by the "
                        "matcher). Off pairs them at random, to measure what matching brings.")
    dynm: bool = setting(True, label="Dynamic re-matching (DynM)",
                         help="At the scheduled epochs the student picks new teachers: the MS tile of its class whose "
                         "predictions are closest to its own. Off keeps the first pairs.")
    ot1: bool = setting(True, label="Attention alignment (L_ot1)",
                        help="Align teacher and student feature maps after the Planner's attention re-weighting "
                        "(CORAL). Turn it off only to measure what it brings.")
    ot2: bool = setting(True, label="Pooled alignment (L_ot2)",
                        help="Align the pooled teacher and student features (CORAL). Turn it off only to measure what "
                        "it brings.")
    ot_scale: str = setting("paper", label="Alignment scale", choices=("paper", "trace"),
                            help="How the two alignment terms are scaled. 'paper' divides by 4 x width², which makes "
                            "them tiny next to the other terms; 'trace' compares each side's feature spread relative "
                            "to its own size, so they steer the student noticeably (a departure from the paper).")
    gamma: float = setting(3.0, label="Re-matching temperature (gamma)", minimum=0, maximum=100, above=True,
                           help="Softens the predictions DynM compares when it picks new teachers; higher spreads the "
                           "choice over more MS tiles (paper: 3).")
    heads: int = setting(8, label="Planner heads (H)", minimum=1, maximum=64,
                         help="Attention heads of the Planner that re-weights feature maps for L_ot1 (paper: 8); "
                         "fewer are cheaper.")
    planner_width: int = setting(0, label="Planner width", minimum=0, maximum=8192,
                                 help="Channels inside the Planner; 0 = the teacher's feature channels (the paper's "
                                 "form). Smaller is cheaper with a wide teacher.")
    e0: int = setting(10, label="First re-matching epoch (e0)", minimum=0, maximum=MAX_EPOCHS,
                      help="Student epoch after which DynM first picks new teachers; later gives the student time to "
                      "learn before it chooses.")
    delta_e: int = setting(10, label="Re-matching interval (delta_e)", minimum=1, maximum=MAX_EPOCHS,
                           help="Epochs between the first and the second re-matching.")
    e_mu: int = setting(5, label="Interval growth (e_mu)", minimum=0, maximum=MAX_EPOCHS,
                        help="Epochs each later interval adds, so re-matching gets rarer as training settles; 0 keeps "
                        "the interval fixed.")
    probe_size: int = setting(64, label="Transport-cost probe size", minimum=2, maximum=100_000,
                              help="Matched pairs on which the transport cost shown in the Monitor is measured each "
                              "epoch; more is steadier and slower.")
    ssm_similarity: str = setting("cosine", label="Initial matching similarity", choices=("cosine", "csls"),
                                  help="cosine is the paper's; csls lowers the score of 'hub' MS tiles that are close "
                                  "to every RGB image, so the pairing spreads over more teachers.")
    csls_neighbours: int = setting(10, label="CSLS neighbours", minimum=1, maximum=1000,
                                   help="How many nearest neighbours define a tile's density for csls.")
    teacher_capacity: float = setting(0.0, label="Teacher capacity", minimum=0, maximum=1000,
                                      help="0 = any MS tile may teach any number of RGB images (the paper). Above 0, "
                                      "each MS tile teaches at most capacity x (RGB images / MS tiles of its class), "
                                      "in the initial matching and in every re-matching.")


@dataclass
class AugmentConfig:
    dihedral: bool = setting(True, label="Rotations and flips",
                             help="Train on all 8 rotations and reflections of each tile: imagery seen from above has "
                             "no 'up', so each is an equally valid sample of its class.")
    crop_min: float = setting(0.6, label="Random crop (smallest share)", minimum=0.1, maximum=1,
                              help="Each training tile is a random crop of at least this share of its area, resized "
                              "back; 1 = no cropping. Helps most with a few dozen images per class.")
    colour_jitter: float = setting(0.2, label="RGB colour jitter", minimum=0, maximum=0.9,
                                   help="Random brightness, contrast and saturation changes of up to this fraction for "
                                   "RGB images (never for multispectral tiles, whose values are physical); 0 = none.")


@dataclass
class TrainConfig:
    optimizer: str = setting("adam", label="Optimiser", choices=OPTIMIZERS,
                             help="The update rule; Adam suits most runs, SGD usually needs a higher learning rate.")
    weight_decay: float = setting(1e-4, label="Weight decay", minimum=0, maximum=1,
                                  help="Pulls the weights towards zero to curb over-fitting; raise it a little for a "
                                  "small archive.")
    label_smoothing: float = setting(0.0, label="Label smoothing", minimum=0, maximum=0.5,
                                     help="Moves this share of each label's probability evenly to the other classes in "
                                     "the teacher's and the student's classification loss (0 = off, 0.1 is usual): a "
                                     "regulariser for small archives, and the RGB-only control that tells whether "
                                     "distillation adds knowledge or only softer targets.")
    scheduler: str = setting("none", label="Learning-rate schedule", choices=SCHEDULERS,
                             help="none keeps the rate; cosine lowers it smoothly to 0 over each stage; step divides it "
                             "by 10 at each third.")
    seed: int = setting(0, label="Seed", minimum=0, maximum=2**31 - 1,
                        help="Fixes the splits, initial weights and data order: the same seed repeats a run exactly. "
                        "Change it to see how much results vary.")
    device: str = setting("auto", label="Device", choices=DEVICE_NAMES,
                          help="Where training runs: auto picks a CUDA GPU, then Apple MPS, then the CPU.")
    workers: int = setting(0, label="Decoder threads", minimum=0, maximum=256,
                           help="Threads that decode image files (0 = one per core); lower it on a shared machine.")
    precise_bn: bool = setting(True, label="Re-estimate BatchNorm before validation",
                               help="Before each validation, recompute BatchNorm statistics over the training tiles "
                               "so a model is judged with settled statistics (few batches per epoch leave them stale).")
    selection_window: int = setting(3, label="Model selection window (epochs)", minimum=1, maximum=100,
                                    help="The kept epoch maximises the validation score averaged over this many "
                                    "consecutive epochs (1 = the single best epoch, which chases noise on small "
                                    "validation sets).")
    sync_batchnorm: bool = setting(False, label="Synchronised BatchNorm",
                                   help="Under torchrun: BatchNorm statistics over the global batch of all "
                                   "processes instead of each process's share (slower; what one process computes).")


@dataclass
class RunConfig:
    name: str = setting("run", label="Run name", help="Names the run folder (a date and time are added).")
    output_dir: str = setting("", label="Output folder",
                              help="Where run folders are created (empty: the app's data folder).")
    data: DataConfig = field(default_factory=DataConfig)
    teacher: StageConfig = field(default_factory=StageConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
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
        if not math.isfinite(number) or number != int(number):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return int(number)
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(key, f"expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(key, f"expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(key, f"must be a finite number, got {value!r}")
        return number
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


def config_from_dict(data: Mapping[str, Any], base_dir: str | Path | None = None, *, check: bool = True) -> RunConfig:
    """Build and validate a RunConfig; relative paths are resolved against ``base_dir``.

    ``check=False`` only types the values (no cross-field rules, no KD registry, so no torch import):
    for reading back a run's config, validated when the run started."""
    config = _build(RunConfig, data, "")
    base = Path(base_dir).resolve() if base_dir is not None else None
    for section, key in PATH_KEYS:
        holder = getattr(config, section) if section else config
        setattr(holder, key, _resolve(getattr(holder, key), base))
    if check:
        validate(config)
    return config


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError("config", f"file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError("config", f"{path} is a folder; give the run configuration file (.toml)") from None
    except UnicodeDecodeError as error:
        raise ConfigError("config", f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("config", f"{path} is not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError("config", f"cannot read {path}: {error.strerror or error}") from None
    return config_from_dict(data, path.parent)


def config_to_toml(config: RunConfig) -> str:
    """The TOML text of a config, exactly as ``save_config`` writes it."""
    import tomli_w  # only when writing TOML: the torch-free labeller's build reads bundles without it

    return tomli_w.dumps(config_to_dict(config))


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the config as TOML atomically (temp file then rename)."""
    write_text_atomic(Path(path), config_to_toml(config))


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


def _check_fields(section: Any, prefix: str) -> None:
    """Every field's SettingSpec: choices, finiteness and bounds (nested sections recursively)."""
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        if dataclasses.is_dataclass(value):
            _check_fields(value, f"{item.name}.")
        else:
            item.metadata["spec"].check(f"{prefix}{item.name}", value)


def validate(config: RunConfig) -> None:
    """Check every field's spec, then the rules that tie fields together; ConfigError names the key."""
    from sembridge_engine.distill.losses import KDSettingError, check_kd_settings

    _check_fields(config, "")
    data = config.data
    if data.band_preset == "custom":
        if not data.custom_bands:
            raise ConfigError("data.custom_bands", "band_preset 'custom' needs the list of band names")
        if len(data.custom_rgb) != 3 or not set(data.custom_rgb) <= set(data.custom_bands):
            raise ConfigError("data.custom_rgb", "needs three names from data.custom_bands (R, G, B)")
    if len(data.rgb_split) != 3 or any(not math.isfinite(f) or f <= 0 for f in data.rgb_split) \
            or abs(sum(data.rgb_split) - 1) > 1e-6:
        raise ConfigError("data.rgb_split", "needs three fractions train, val, test, each above 0, summing to 1")
    distill = config.distill
    try:
        check_kd_settings(distill.loss, distill.params, distill.pssm, distill.pssm_params)
    except KDSettingError as error:
        raise ConfigError(f"distill.{error.key}", str(error)) from None


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: RunConfig | Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a config (or of any part of one), for caching."""
    data = config_to_dict(config) if isinstance(config, RunConfig) else config
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()
