"""Does the teacher's knowledge fit? The teacher's class resemblances against the RGB classes' own.

Vanilla KD hands the student, besides the class, the teacher's view of which other classes a tile
resembles (its softened non-target probabilities, the "dark knowledge"). That can only help when
the two modalities share those resemblances. The teacher's view is its mean softened distribution
over the other student classes, per class, on every MS tile of the class; the RGB domain's view is
the same from a student trained without distillation, on its own validation and test images (a
distilled student has learned the teacher's resemblances, so it would agree with them by
construction). Two numbers compare the views: how many classes have the same most-resembled class
(chance: n / (n - 1) of n) and the mean cosine of the two non-target distributions after subtracting
the uniform one (0: unrelated; 1: the same resemblances; negative: opposite). A permutation test
says whether that cosine is above chance.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import RunConfig
from ..data import ChannelStats, stratified_split
from ..data.tiles import Tiles
from ..events import CancelToken, EventCallback, LogLine, ignore_event
from ..models.backbones import build_backbone
from .checkpoint import load_checkpoint
from .dataset import RunData, assemble_run_data, student_classes
from .reuse import data_mismatch
from .rundir import RunFolder

DEFAULT_TEMPERATURE = 4.0          # Hinton's, the KD loss's default
TEMPERATURE_LOSSES = ("kd", "dkd")  # losses whose `temperature` softens the raw logits (lskd's acts after standardising)
EXACT_UP_TO = 8                     # 8! = 40320 permutations: every one is tried; above that, a sample
SAMPLED_PERMUTATIONS = 10_000
SIGNIFICANCE = 0.05
INFERENCE_BATCH = 128
TIE_TOLERANCE = 1e-9               # a permutation that rebuilds the observed view counts as reaching it


def non_target(mean_probabilities: torch.Tensor) -> torch.Tensor:
    """(..., n, n) per-class mean distributions -> (..., n, n-1) distributions over the other classes."""
    n = mean_probabilities.shape[-1]
    others = mean_probabilities[..., ~torch.eye(n, dtype=torch.bool)].view(*mean_probabilities.shape[:-2], n, n - 1)
    return others / others.sum(-1, keepdim=True)


def class_means(logits: torch.Tensor, members: torch.Tensor, temperature: float) -> torch.Tensor:
    """(n, n) mean softened distribution of each class's tiles; ``members`` (N, n) bool (a tile may
    belong to several classes). One matrix product: members summed per class, divided by the counts."""
    probabilities = F.softmax(logits / temperature, 1)
    return members.T.float() @ probabilities / members.sum(0).float()[:, None]


def centred_cosine(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Mean over classes of the cosine between two (..., n, n-1) non-target views minus the uniform one."""
    uniform = 1.0 / first.shape[-1]
    first, second = torch.broadcast_tensors(first - uniform, second - uniform)
    return F.cosine_similarity(first, second, dim=-1).mean(-1)


def compare(first: torch.Tensor, second: torch.Tensor) -> tuple[int, float]:
    """(classes with the same most-resembled class, mean centred cosine) of two non-target views."""
    return int((first.argmax(1) == second.argmax(1)).sum()), centred_cosine(first, second).item()


def most_resembled(view: torch.Tensor) -> torch.Tensor:
    """Each class's most-resembled other class, as a class index, from an (n, n-1) non-target view."""
    column = view.argmax(1)
    return column + (column >= torch.arange(view.shape[0])).long()


def class_permutations(n: int, *, samples: int = SAMPLED_PERMUTATIONS, seed: int = 0) -> tuple[torch.Tensor, bool]:
    """(k, n) relabellings of n classes and whether they are all of them (n <= EXACT_UP_TO) rather than a
    seeded sample of ``samples``."""
    if n <= EXACT_UP_TO:
        return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.int64), True
    return torch.rand(samples, n, generator=torch.Generator().manual_seed(seed)).argsort(1), False


def agreement_p_value(teacher_means: torch.Tensor, rgb_view: torch.Tensor, *, samples: int = SAMPLED_PERMUTATIONS,
                      seed: int = 0) -> float:
    """How often the teacher's view agrees with the RGB view at least as well (centred cosine) once its
    class identities are shuffled: the chance of the observed agreement if the two were unrelated.

    The classes are relabelled jointly on the rows and columns of the teacher's (n, n) mean-probability
    matrix, so each shuffled view is an equally structured view of resemblances (as sharp, as lopsided)
    that merely belongs to other classes; comparing against such views, not against random numbers,
    tests the one thing in question: whether the resemblances belong to the right classes. With n <= 8
    classes every one of the n! relabellings is tried (the identity among them), so p is exact and at
    least 1/n!; with more, n! is too many and 10000 seeded random relabellings estimate it, counting
    the observed one as in (1 + hits) / (1 + samples) so that p is never 0.
    """
    teacher_means, rgb_view = teacher_means.double(), rgb_view.double()
    observed = centred_cosine(non_target(teacher_means), rgb_view)
    permutations, exact = class_permutations(teacher_means.shape[0], samples=samples, seed=seed)
    shuffled = teacher_means[permutations[:, :, None], permutations[:, None, :]]
    reached = int((centred_cosine(non_target(shuffled), rgb_view) >= observed - TIE_TOLERANCE).sum())
    return reached / len(permutations) if exact else (reached + 1) / (len(permutations) + 1)


def _model_of(state: dict[str, Any]) -> torch.nn.Module:
    """A checkpoint's kept (best) model, in evaluation mode."""
    meta = state["meta"]
    model = build_backbone(meta["arch"], meta["in_channels"], meta["num_classes"])
    model.load_state_dict(state["best"]["state"] if state["best"] else state["modules"][state["stage"]])
    return model.eval()


def _logits(model: torch.nn.Module, tiles: Tiles, rows: torch.Tensor, cancel: CancelToken | None) -> torch.Tensor:
    batches = []
    for start in range(0, len(rows), INFERENCE_BATCH):
        if cancel is not None:
            cancel.raise_if_cancelled()
        batches.append(model(tiles[rows[start:start + INFERENCE_BATCH]]))
    return torch.cat(batches)


@torch.no_grad()
def teacher_means(teacher_state: dict[str, Any], data: RunData, temperature: float,
                  cancel: CancelToken | None = None) -> torch.Tensor:
    """(n, n): the teacher's mean softened distribution over the student classes on every MS tile of each
    class (the MS tiles normalised as the teacher was trained)."""
    data.use_ms_stats(ChannelStats.from_dict(teacher_state["meta"]["ms_stats"]))
    logits = _logits(_model_of(teacher_state), data.ms_tiles, torch.arange(len(data.ms_tiles)), cancel)
    return class_means(logits[:, data.teacher_columns], data.ms_membership, temperature)


@torch.no_grad()
def rgb_view(run: RunFolder, config: RunConfig, data: RunData, temperature: float,
             cancel: CancelToken | None = None) -> torch.Tensor:
    """(n, n-1): the run's student's non-target view on its own validation and test RGB images (never
    trained on), from the run's split and seed."""
    state = load_checkpoint(run.checkpoint("student"))
    data.rgb_tiles.use_stats(ChannelStats.from_dict(state["meta"]["rgb_stats"]))
    _, val, test = stratified_split(data.rgb_labels.numpy(), tuple(config.data.rgb_split), config.train.seed)
    held_out = torch.from_numpy(np.concatenate([val, test]))
    members = data.rgb_labels[held_out][:, None] == torch.arange(len(data.student_classes))[None, :]
    empty = [name for name, count in zip(data.student_classes, members.sum(0).tolist()) if count == 0]
    if empty:
        raise ValueError(f"{run.root}: no validation or test images of {', '.join(empty)}; each class needs at least one")
    return non_target(class_means(_logits(_model_of(state), data.rgb_tiles, held_out, cancel), members, temperature))


def distillation_temperature(config: RunConfig) -> float:
    """The temperature the run's KD loss softens the teacher with, else Hinton's 4."""
    if config.distill.loss in TEMPERATURE_LOSSES:
        return float(config.distill.params.get("temperature", DEFAULT_TEMPERATURE))
    return DEFAULT_TEMPERATURE


@dataclass(frozen=True)
class TeacherFit:
    """The teacher's resemblances against the RGB classes' own (see the module's docstring)."""

    classes: list[str]
    same_top: int                              # classes whose most-resembled class is the same in both views
    cosine: float                              # mean centred cosine of the two views
    p_value: float                             # permutation test of the cosine (agreement_p_value)
    chance_same_top: float                     # same_top expected of unrelated views: n / (n - 1)
    per_class: list[tuple[str, str, str]]      # (class, teacher's most-resembled class, RGB's most-resembled class)
    temperature: float

    @property
    def verdict(self) -> str:
        """One plain-language sentence: can distillation transfer the teacher's resemblances?"""
        n = len(self.classes)
        if 1 / math.factorial(n) >= SIGNIFICANCE:
            return (f"with only {n} classes no agreement can be told from chance (the smallest possible p is "
                    f"1/{math.factorial(n)}): the check needs at least 4 classes")
        if self.p_value < SIGNIFICANCE and self.cosine > 0:
            return (f"the teacher's resemblances match the RGB classes' (p = {self.p_value:.2g}): "
                    "distillation can transfer them")
        return (f"the teacher's resemblances agree with the RGB classes' no better than chance (p = {self.p_value:.2g}): "
                "expect distillation to act as a regulariser at most, not to transfer knowledge")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["per_class"] = [{"class": name, "teacher": teacher, "rgb": rgb} for name, teacher, rgb in self.per_class]
        return {**values, "verdict": self.verdict}


def _run_config(folder: RunFolder, role: str) -> RunConfig:
    if not folder.root.is_dir():
        raise ValueError(f"{folder.root}: no such folder (the {role})")
    config = folder.config()
    if config is None:
        raise ValueError(f"{folder.root}: not a SemBridge run folder (no readable config.toml)")
    return config


def _rgb_only_config(folder: RunFolder) -> RunConfig:
    """The configuration of a finished run whose student learnt without distillation."""
    config = _run_config(folder, "RGB-only run")
    if config.uses_teacher:
        raise ValueError(f"{folder.root}: its student learnt from a teacher (distill.loss = '{config.distill.loss}', "
                         f"ot1 = {config.distill.ot1}, ot2 = {config.distill.ot2}), so it may have taken on the "
                         "teacher's resemblances and cannot serve as the independent RGB view; give a plain RGB run "
                         "(distill.loss = 'none' without OT terms)")
    if folder.status != "finished":
        raise ValueError(f"{folder.root}: the run is {folder.status}, not finished; its student is the RGB view, "
                         "so finish or resume it first")
    return config


def _teacher_state(folder: RunFolder) -> dict[str, Any]:
    path = folder.checkpoint("teacher")
    if not path.is_file():
        raise ValueError(f"{folder.root}: no teacher checkpoint ({path}); give a run that trained a teacher")
    state = load_checkpoint(path)
    if state["stage"] != "teacher" or not state.get("complete"):
        raise ValueError(f"{path}: the teacher stage has not finished; resume that run first")
    return state


def _check_same_classes(teacher: RunFolder, teacher_config: RunConfig, rgb: RunFolder, rgb_config: RunConfig) -> None:
    if Path(teacher_config.data.ms_path).resolve() != Path(rgb_config.data.ms_path).resolve():
        raise ValueError(f"the two runs use different MS archives ({teacher.root}: {teacher_config.data.ms_path}; "
                         f"{rgb.root}: {rgb_config.data.ms_path}); give runs of the same project")
    teacher_classes, rgb_classes = student_classes(teacher_config), student_classes(rgb_config)
    if teacher_classes != rgb_classes:
        raise ValueError(f"the two runs' student classes differ ({teacher.root}: {', '.join(teacher_classes)}; "
                         f"{rgb.root}: {', '.join(rgb_classes)}); give runs that learn the same classes")


def teacher_fit(teacher_run: Path, rgb_only_run: Path, *, temperature: float | None = None,
                callback: EventCallback = ignore_event, cancel: CancelToken | None = None) -> TeacherFit:
    """Compare the teacher of ``teacher_run`` with the student of ``rgb_only_run`` (a finished run trained
    without distillation) on the RGB-only run's data; ``temperature`` defaults to the teacher run's KD
    temperature; ``callback`` gets a LogLine per step. Raises ValueError naming the folder when either run
    cannot serve."""
    teacher_folder, rgb_folder = RunFolder(Path(teacher_run)), RunFolder(Path(rgb_only_run))
    teacher_config = _run_config(teacher_folder, "teacher run")
    rgb_config = _rgb_only_config(rgb_folder)
    teacher_state = _teacher_state(teacher_folder)
    _check_same_classes(teacher_folder, teacher_config, rgb_folder, rgb_config)
    temperature = distillation_temperature(teacher_config) if temperature is None else float(temperature)
    if not temperature > 0:
        raise ValueError(f"temperature {temperature:g}: it must be above 0")

    def log(message: str) -> None:
        callback(LogLine(message))

    data = assemble_run_data(rgb_config, need_ms=True, log=log, cancel=cancel)
    mismatch = data_mismatch(teacher_state["meta"], "teacher", data, rgb_config)
    if mismatch is not None:
        key, theirs, ours = mismatch
        raise ValueError(f"{teacher_folder.root}: its teacher was trained with {key} = {theirs!r}, but the RGB-only "
                         f"run's data have {ours!r}; give runs of the same project")
    log(f"teacher of {teacher_folder.name} on {len(data.ms_tiles)} MS tiles")
    teacher_matrix = teacher_means(teacher_state, data, temperature, cancel)
    log(f"student of {rgb_folder.name} on its validation and test images")
    rgb = rgb_view(rgb_folder, rgb_config, data, temperature, cancel)
    teacher_view = non_target(teacher_matrix)
    same_top, cosine = compare(teacher_view, rgb)
    classes = list(data.student_classes)
    n = len(classes)
    return TeacherFit(
        classes=classes, same_top=same_top, cosine=cosine, p_value=agreement_p_value(teacher_matrix, rgb),
        chance_same_top=n / (n - 1),
        per_class=[(classes[i], classes[t], classes[r]) for i, (t, r) in
                   enumerate(zip(most_resembled(teacher_view).tolist(), most_resembled(rgb).tolist()))],
        temperature=temperature,
    )
