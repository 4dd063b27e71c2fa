"""The staged SemBridge run (Algorithm 1): teacher -> matcher -> galleries -> SSM -> student with DynM.

Every stage checkpoints each epoch (atomically) and can be resumed; data order and flips come
from a generator seeded by (seed, stage, epoch), and global RNG states are restored from the
checkpoint, so on CPU a resumed run reproduces the uninterrupted run's metrics exactly.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..config import RunConfig, config_hash, config_to_dict, load_config
from ..data import ChannelStats, resize_tiles
from ..distill.losses import KDInputs, build_kd_loss
from ..distill.matching import dynm_epochs, dynm_match, random_class_consistent_match, ssm_match
from ..distill.planner import Planner
from ..events import (
    BatchProgress,
    Cancelled,
    CancelToken,
    CheckpointSaved,
    EpochFinished,
    EventCallback,
    LogLine,
    MatchingUpdated,
    RunFailed,
    RunFinished,
    StageFinished,
    StageStarted,
    ignore_event,
)
from ..metrics import classification_metrics, multilabel_metrics, orthogonal_projection, transport_cost
from ..models.backbones import Backbone, build_backbone
from ..models.matcher import Matcher, info_nce
from .bank import TeacherBank
from .checkpoint import CheckpointError, capture_rng_state, cpu_state_dict, load_checkpoint, restore_rng_state, save_checkpoint
from .dataset import RGB_BAND_NAMES, RunData, assemble_run_data
from .device import configure_device, describe_device, resolve_device, uses_amp
from .loops import build_optimizer, build_scheduler, epoch_generator, infer, random_flips, set_train_mode, shuffled_batches
from .rundir import RunFolder, STAGES, default_output_dir, new_run_dir, teacher_cache_dir, utc_now, write_csv_atomic, write_json_atomic

TIMING_KEYS = ("epoch_seconds",)
MODEL_SEED_OFFSET = {"teacher": 11, "matcher": 22, "student": 33}
UNUSED = None  # a loss component that does not exist in a stage is null in metrics.jsonl


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")


@dataclass
class StageSpec:
    """What the generic epoch loop needs to train, evaluate, select and checkpoint one stage."""

    name: str
    epochs: int
    batch_size: int
    train_count: int
    modules: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_step: Callable[[torch.Tensor, torch.Generator, int], dict[str, float]]
    evaluate: Callable[[int], dict[str, Any]]
    meta: dict[str, Any]
    select: str | None = None                       # module whose best-val weights are kept
    score: Callable[[dict], tuple] = lambda row: ()
    after_epoch: Callable[[int], dict[str, Any]] = lambda epoch: {}
    extra_state: Callable[[], dict[str, Any]] = lambda: {}
    restore_extra: Callable[[dict[str, Any]], None] = lambda state: None


def _teacher_cache_key(config: RunConfig, data: RunData, stage: str) -> str:
    section = config.teacher if stage == "teacher" else config.matcher
    return config_hash({
        "stage": stage, "engine": __version__, "ms_fingerprint": data.ms_fingerprint,
        "ms_path": config.data.ms_path, "bands": list(data.preset.band_names), "rgb": list(data.preset.rgb_bands),
        "ms_tile_size": config.data.ms_tile_size, "ms_val_fraction": config.data.ms_val_fraction,
        "stage_config": config_to_dict(config)[stage], "seed": config.train.seed,
        "optimizer": config.train.optimizer, "weight_decay": config.train.weight_decay,
        "scheduler": config.train.scheduler, "arch": section.arch,
    })


class _Run:
    def __init__(self, config: RunConfig, folder: RunFolder, callback: EventCallback, cancel: CancelToken | None):
        self.config, self.folder, self.emit, self.cancel = config, folder, callback, cancel
        self.device = resolve_device(config.train.device)
        configure_device(self.device)
        self.amp = uses_amp(self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.seed = config.train.seed
        self.stage_info: dict[str, dict[str, Any]] = {}
        self.started = time.perf_counter()

    # -- small helpers -------------------------------------------------------------------------
    def check(self) -> None:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()

    def log(self, message: str, level: str = "info") -> None:
        self.emit(LogLine(message, level))

    def autocast(self):
        return torch.autocast(self.device.type, enabled=self.amp)

    def backward(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def seed_models(self, stage: str) -> None:
        """Model initialisation depends only on the seed and the stage."""
        torch.manual_seed(self.seed + MODEL_SEED_OFFSET[stage])

    # -- the generic epoch loop -------------------------------------------------------------------
    def run_stage(self, spec: StageSpec) -> None:
        path = self.folder.checkpoint(spec.name)
        history: list[dict[str, Any]] = []
        best: dict[str, Any] = {}
        start = 0
        if path.exists():
            state = load_checkpoint(path)
            if state["stage"] != spec.name:
                raise CheckpointError(f"{path}: holds stage {state['stage']!r}, expected {spec.name!r}")
            try:
                for name, module in spec.modules.items():
                    module.load_state_dict(state["modules"][name])
                spec.optimizer.load_state_dict(state["optimizer"])
                if spec.scheduler is not None and state.get("scheduler"):
                    spec.scheduler.load_state_dict(state["scheduler"])
                if state.get("scaler"):
                    self.scaler.load_state_dict(state["scaler"])
                history, best, start = list(state["history"]), dict(state["best"]), int(state["epoch"])
                spec.restore_extra(state)
                restore_rng_state(state["rng"])
            except (KeyError, RuntimeError, ValueError, TypeError) as error:
                raise CheckpointError(f"{path}: does not fit this run's {spec.name} "
                                      f"({type(error).__name__}: {error}); delete it to retrain the stage") from None
            if start:
                self.log(f"{spec.name}: resuming after epoch {start}/{spec.epochs} from {path}")
        if start < spec.epochs:
            self.emit(StageStarted(spec.name, spec.epochs))
        for epoch in range(start + 1, spec.epochs + 1):
            started = time.perf_counter()
            generator = epoch_generator(self.seed, spec.name, epoch)
            batches = shuffled_batches(spec.train_count, spec.batch_size, generator)
            set_train_mode(list(spec.modules.values()), True)
            totals: dict[str, float] = defaultdict(float)
            seen = 0
            lr = spec.optimizer.param_groups[0]["lr"]
            for done, positions in enumerate(batches, start=1):
                self.check()
                out = spec.train_step(positions, generator, epoch)
                count = out.pop("n")
                seen += count
                for key, value in out.items():
                    totals[key] += value * count
                self.emit(BatchProgress(spec.name, epoch, done, len(batches)))
            if spec.scheduler is not None:
                spec.scheduler.step()
            row: dict[str, Any] = {"stage": spec.name, "epoch": epoch, "epochs": spec.epochs, "lr": lr}
            for key in ("loss_task", "loss_kd", "loss_ot1", "loss_ot2", "loss_total", "train_acc"):
                row[key] = totals[key] / max(seen, 1) if key in totals else UNUSED
            set_train_mode(list(spec.modules.values()), False)
            row.update(spec.after_epoch(epoch))
            row.update(spec.evaluate(epoch))
            row["epoch_seconds"] = time.perf_counter() - started
            if spec.select is not None:
                score = spec.score(row)
                if not best or list(score) >= list(best["score"]):
                    best = {"epoch": epoch, "score": list(score),
                            "state": cpu_state_dict(spec.modules[spec.select])}
            history.append(row)
            save_checkpoint(path, {
                "stage": spec.name, "epoch": epoch, "epochs": spec.epochs, "complete": epoch == spec.epochs,
                "modules": {name: module.state_dict() for name, module in spec.modules.items()},
                "optimizer": spec.optimizer.state_dict(),
                "scheduler": spec.scheduler.state_dict() if spec.scheduler is not None else {},
                "scaler": self.scaler.state_dict() if self.amp else {},
                "history": history, "best": best, "rng": capture_rng_state(), "meta": spec.meta,
                **spec.extra_state(),
            })
            self.folder.append_metrics(row)
            self.emit(EpochFinished(spec.name, epoch, spec.epochs, dict(row)))
            self.emit(CheckpointSaved(spec.name, epoch, str(path)))
        if spec.epochs == 0 and not path.exists():
            save_checkpoint(path, {"stage": spec.name, "epoch": 0, "epochs": 0, "complete": True,
                                   "modules": {name: module.state_dict() for name, module in spec.modules.items()},
                                   "optimizer": spec.optimizer.state_dict(), "scheduler": {}, "scaler": {},
                                   "history": [], "best": {}, "rng": capture_rng_state(), "meta": spec.meta})
        if spec.select is not None and best:
            spec.modules[spec.select].load_state_dict(best["state"])
        set_train_mode(list(spec.modules.values()), False)
        if start < spec.epochs:
            self.emit(StageFinished(spec.name))
        best_row = next((row for row in history if row["epoch"] == best.get("epoch")), {})
        self.stage_info[spec.name] = {
            "source": "trained", "epochs": spec.epochs, "best_epoch": best.get("epoch"),
            "best_val_oa": best_row.get("val_oa"),
            "last": {key: value for key, value in (history[-1] if history else {}).items()
                     if not isinstance(value, list)},
        }

    # -- stage (a): teacher -------------------------------------------------------------------------
    def teacher_meta(self, data: RunData) -> dict[str, Any]:
        return {"arch": self.config.teacher.arch, "in_channels": data.preset.band_count,
                "num_classes": len(data.ms_classes), "class_names": list(data.ms_classes),
                "band_names": list(data.preset.band_names), "tile_size": self.config.data.ms_tile_size,
                "ms_stats": data.ms_stats.to_dict(), "multi_label": data.ms_multi_label}

    def load_reused(self, stage: str, path: Path, data: RunData, origin: str) -> dict[str, Any]:
        """A complete teacher/matcher checkpoint of another run (or the cache), checked for compatibility."""
        state = load_checkpoint(path)
        if state["stage"] != stage or not state.get("complete"):
            raise ValueError(f"{origin}: {path} is not a finished {stage} checkpoint; finish or resume that run first")
        meta = state["meta"]
        wanted = {"band_names": list(data.preset.band_names), "tile_size": self.config.data.ms_tile_size}
        if stage == "teacher":
            wanted.update(class_names=list(data.ms_classes), multi_label=data.ms_multi_label)
        for key, value in wanted.items():
            if meta.get(key) != value:
                raise ValueError(f"{origin}: its {stage} was trained with {key} = {meta.get(key)!r}, "
                                 f"but this run has {value!r}; the {stage} cannot be reused")
        stats = ChannelStats.from_dict(meta["ms_stats"])
        if stats != data.ms_stats:
            data.use_ms_stats(stats)
        return state

    def teacher_stage(self, data: RunData) -> Backbone:
        config = self.config
        own = self.folder.checkpoint("teacher")
        reuse = self.reuse_source("teacher", data)
        if not own.exists() and reuse is not None:
            path, origin = reuse
            state = self.load_reused("teacher", path, data, origin)
            meta = state["meta"]
            teacher = build_backbone(meta["arch"], meta["in_channels"], meta["num_classes"]).to(self.device)
            teacher.load_state_dict(state["best"]["state"] if state["best"] else state["modules"]["teacher"])
            teacher.eval()
            self.stage_info["teacher"] = {"source": origin, "epochs": 0, "best_epoch": state["best"].get("epoch"),
                                          "best_val_oa": state["best"].get("score", [None])[0], "last": {}}
            self.log(f"teacher reused from {origin} ({meta['arch']}); teacher stage skipped")
            return teacher
        self.seed_models("teacher")
        teacher = build_backbone(config.teacher.arch, data.preset.band_count, len(data.ms_classes)).to(self.device)
        optimizer = build_optimizer(teacher.parameters(), config.teacher, config)
        multi_label = data.ms_multi_label

        def train_step(positions, generator, epoch):
            index = data.ms_train[positions]
            tiles = random_flips(data.ms_tiles[index], generator).to(self.device)
            targets = data.ms_labels[index].to(self.device)
            with self.autocast():
                logits = teacher(tiles)
                loss = (F.binary_cross_entropy_with_logits(logits, targets) if multi_label
                        else F.cross_entropy(logits, targets))
            self.backward(optimizer, loss)
            if multi_label:
                correct = ((logits.detach() > 0) == (targets > 0.5)).float().mean().item()
            else:
                correct = (logits.detach().argmax(1) == targets).float().mean().item()
            return {"n": len(index), "loss_task": loss.item(), "loss_total": loss.item(), "train_acc": correct}

        def evaluate(epoch):
            logits = infer(teacher, data.ms_tiles[data.ms_val], self.device, config.teacher.batch_size, self.check)
            labels = data.ms_labels[data.ms_val]
            if multi_label:
                result = multilabel_metrics(labels, torch.sigmoid(logits))
            else:
                result = classification_metrics(labels, logits.argmax(1), len(data.ms_classes))
            return {"val_oa": result["oa"], "val_macro_f1": result["macro_f1"],
                    "per_class_f1": result["per_class_f1"], "confusion": result.get("confusion")}

        self.run_stage(StageSpec(
            "teacher", config.teacher.epochs, config.teacher.batch_size, len(data.ms_train), {"teacher": teacher},
            optimizer, build_scheduler(optimizer, config.teacher.epochs, config), train_step, evaluate,
            self.teacher_meta(data), select="teacher",
            score=lambda row: (row["val_macro_f1"] if multi_label else row["val_oa"], row["val_macro_f1"]),
        ))
        self.store_in_cache("teacher", data)
        return teacher

    def reuse_source(self, stage: str, data: RunData) -> tuple[Path, str] | None:
        """Where a finished teacher/matcher can be taken from: --teacher-from run, else the cache."""
        source = self.config.student.teacher_from
        if source:
            run = RunFolder(Path(source))
            path = run.checkpoint(stage)
            if stage == "teacher" and not path.exists():
                raise ValueError(f"teacher_from {source}: no teacher checkpoint {path} (is it a SemBridge run folder?)")
            if path.exists():
                return path, f"run {source}"
        cached = teacher_cache_dir() / f"{stage}-{_teacher_cache_key(self.config, data, stage)}.pt"
        if cached.exists():
            return cached, f"cache {cached}"
        return None

    def store_in_cache(self, stage: str, data: RunData) -> None:
        """Copy a finished teacher/matcher checkpoint to the cache so the same setup is free next time."""
        source = self.folder.checkpoint(stage)
        try:
            directory = teacher_cache_dir()
            directory.mkdir(parents=True, exist_ok=True)
            target = directory / f"{stage}-{_teacher_cache_key(self.config, data, stage)}.pt"
            if not target.exists():
                tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)
        except OSError as error:
            self.log(f"could not cache the {stage}: {error}", "warning")

    # -- stage (b): matcher -------------------------------------------------------------------------
    def matcher_stage(self, data: RunData) -> Matcher:
        config, section = self.config, self.config.matcher
        own = self.folder.checkpoint("matcher")
        reuse = self.reuse_source("matcher", data)
        rgb_indices = list(data.preset.rgb_indices)
        if not own.exists() and reuse is not None:
            path, origin = reuse
            state = self.load_reused("matcher", path, data, origin)
            meta = state["meta"]
            matcher = Matcher(meta["arch"], meta["ms_channels"], meta["embed_dim"], meta["temperature"]).to(self.device)
            matcher.load_state_dict(state["modules"]["matcher"])
            matcher.eval()
            self.stage_info["matcher"] = {"source": origin, "epochs": 0, "best_epoch": None, "last": {}}
            self.log(f"matcher reused from {origin}; matcher stage skipped")
            return matcher
        self.seed_models("matcher")
        matcher = Matcher(section.arch, data.preset.band_count, section.embed_dim, section.temperature).to(self.device)
        optimizer = build_optimizer(matcher.parameters(), section, config)

        def train_step(positions, generator, epoch):
            index = data.ms_train[positions]
            tiles = random_flips(data.ms_tiles[index], generator).to(self.device)
            with self.autocast():
                loss = matcher.loss(tiles, tiles[:, rgb_indices])
            self.backward(optimizer, loss)
            return {"n": len(index), "loss_task": loss.item(), "loss_total": loss.item()}

        def evaluate(epoch):
            """Retrieval top-1 MS -> own pseudo-RGB among the tiles of each validation batch."""
            hits, losses, count = 0, 0.0, 0
            with torch.no_grad():
                for index in data.ms_val.split(section.batch_size):
                    self.check()
                    tiles = data.ms_tiles[index].to(self.device)
                    ms, rgb = matcher.encode_ms(tiles).float(), matcher.encode_rgb(tiles[:, rgb_indices]).float()
                    hits += int(((ms @ rgb.T).argmax(1) == torch.arange(len(index), device=self.device)).sum())
                    losses += float(info_nce(ms, rgb, section.temperature)) * len(index)
                    count += len(index)
            return {"val_oa": None, "val_macro_f1": None, "val_retrieval_top1": hits / max(count, 1),
                    "val_loss": losses / max(count, 1)}

        meta = {"arch": section.arch, "ms_channels": data.preset.band_count, "embed_dim": section.embed_dim,
                "temperature": section.temperature, "band_names": list(data.preset.band_names),
                "tile_size": config.data.ms_tile_size, "ms_stats": data.ms_stats.to_dict()}
        self.run_stage(StageSpec(
            "matcher", section.epochs, section.batch_size, len(data.ms_train), {"matcher": matcher}, optimizer,
            build_scheduler(optimizer, section.epochs, config), train_step, evaluate, meta,
        ))
        self.store_in_cache("matcher", data)
        return matcher

    # -- (c)+(d): galleries and the initial matching ----------------------------------------------------
    def initial_match(self, data: RunData, matcher: Matcher | None) -> tuple[torch.Tensor, torch.Tensor, str]:
        labels = data.rgb_labels[data.rgb_train]
        membership = data.ms_membership
        if matcher is None:
            generator = torch.Generator().manual_seed(self.seed)
            match = random_class_consistent_match(labels, membership, generator)
            return match, torch.full((len(match),), float("nan")), "random"
        self.log("galleries: matcher embeddings of every MS tile; SSM matching of the RGB train tiles")
        matcher.eval()
        batch = self.config.matcher.batch_size
        gallery = infer(matcher.encode_ms, data.ms_tiles, self.device, batch, self.check)
        rgb = resize_tiles(data.rgb_tiles[data.rgb_train], self.config.data.ms_tile_size)
        queries = infer(matcher.encode_rgb, rgb, self.device, batch, self.check)
        match, score = ssm_match(queries, labels, gallery, membership)
        return match.cpu(), score.float().cpu(), "ssm"

    def write_match_table(self, data: RunData, round_index: int, match: torch.Tensor, score: torch.Tensor) -> Path:
        path = self.folder.match_table(round_index)
        labels = data.rgb_labels[data.rgb_train].tolist()
        rows = [(data.rgb_paths[rgb], data.ms_paths[ms], data.student_classes[label],
                 "" if math.isnan(value) else f"{value:.6g}")
                for rgb, ms, label, value in zip(data.rgb_train.tolist(), match.tolist(), labels, score.tolist())]
        write_csv_atomic(path, ("rgb_path", "ms_path", "class", "score"), rows)
        return path

    # -- stage (e): student -------------------------------------------------------------------------------
    def student_stage(self, data: RunData, teacher: Backbone | None, matcher: Matcher | None) -> tuple[Backbone, dict]:
        config, section, distill = self.config, self.config.student, self.config.distill
        n_classes = len(data.student_classes)
        bank = match = score = None
        match_round = 0
        if teacher is not None:
            self.log("teacher features of every MS tile computed once (the teacher is frozen)")
            bank = TeacherBank(teacher, data.ms_tiles, data.teacher_columns, self.device,
                               config.teacher.batch_size, self.check)
            if not bank.keeps_maps:
                self.log("teacher feature maps do not fit in memory; they are recomputed per batch", "warning")
            match, score, kind = self.initial_match(data, matcher)
            self.write_match_table(data, 0, match, score)
            self.emit(MatchingUpdated(0, kind, 1.0, str(self.folder.match_table(0))))
        self.seed_models("student")
        student = build_backbone(section.arch, 3, n_classes).to(self.device)
        modules: dict[str, nn.Module] = {"student": student}
        kd_loss = planner = None
        if teacher is not None and distill.loss != "none":
            kd_loss = build_kd_loss(distill.loss, distill.params, student=student, teacher=teacher,
                                    pssm=distill.pssm, pssm_params=distill.pssm_params).to(self.device)
            modules["kd_loss"] = kd_loss
        if teacher is not None and (distill.ot1 or distill.ot2):
            planner = Planner(teacher, student, heads=distill.heads,
                              width=distill.planner_width or None).to(self.device)
            modules["planner"] = planner
        parameters = [p for module in modules.values() for p in module.parameters()]
        optimizer = build_optimizer(parameters, section, config)
        lambda1, lambda2 = distill.lambda1, 1.0 - distill.lambda1
        rematch_at = set(dynm_epochs(distill.e0, distill.delta_e, distill.e_mu, section.epochs)) - {0} \
            if teacher is not None and distill.dynm else set()
        train_labels = data.rgb_labels[data.rgb_train]
        state = {"match": match, "score": score, "round": match_round}

        probe = torch.randperm(len(data.rgb_train), generator=epoch_generator(self.seed, "probe", 0))
        probe = probe[:distill.probe_size].sort().values
        projection = None
        if bank is not None and bank.embeddings.shape[1] != student.embedding_dim:
            wide, narrow = max(bank.embeddings.shape[1], student.embedding_dim), min(bank.embeddings.shape[1], student.embedding_dim)
            projection = orthogonal_projection(wide, narrow, self.seed)

        def train_step(positions, generator, epoch):
            index = data.rgb_train[positions]
            tiles = random_flips(data.rgb_tiles[index], generator).to(self.device)
            labels = data.rgb_labels[index].to(self.device)
            zero = torch.zeros((), device=self.device)
            with self.autocast():
                features = student.forward_features(tiles)
                loss_task = F.cross_entropy(features.logits, labels)
                loss_kd, loss_ot1, loss_ot2 = zero, zero, zero
                if bank is not None:
                    teacher_features = bank.features(state["match"][positions])
                    if kd_loss is not None:
                        loss_kd = kd_loss(KDInputs(features, teacher_features, labels, epoch - 1, section.epochs))
                    if planner is not None:
                        loss_ot1, loss_ot2 = planner(teacher_features, features)
                        loss_ot1 = loss_ot1 if distill.ot1 else zero
                        loss_ot2 = loss_ot2 if distill.ot2 else zero
                total = loss_task + lambda1 * loss_kd + lambda2 * (loss_ot1 + loss_ot2)
            self.backward(optimizer, total)
            correct = (features.logits.detach().argmax(1) == labels).float().mean()
            values = torch.stack([loss_task, loss_kd, loss_ot1, loss_ot2, total, correct]).float().tolist()
            return {"n": len(index), **dict(zip(("loss_task", "loss_kd", "loss_ot1", "loss_ot2", "loss_total", "train_acc"), values))}

        def after_epoch(epoch):
            if epoch not in rematch_at:
                return {}
            logits = infer(student, data.rgb_tiles[data.rgb_train], self.device, section.batch_size, self.check)
            new_match, kl = dynm_match(logits, train_labels, bank.logits, data.ms_membership, distill.gamma)
            new_match, kl = new_match.cpu(), kl.float().cpu()
            changed = float((new_match != state["match"]).float().mean())
            state.update(match=new_match, score=kl, round=state["round"] + 1)
            path = self.write_match_table(data, state["round"], new_match, kl)
            self.emit(MatchingUpdated(epoch, "dynm", changed, str(path)))
            return {"matching_changed_fraction": changed, "matching_round": state["round"]}

        def evaluate(epoch):
            logits = infer(student, data.rgb_tiles[data.rgb_val], self.device, section.batch_size, self.check)
            result = classification_metrics(data.rgb_labels[data.rgb_val], logits.argmax(1), n_classes)
            row = {"val_oa": result["oa"], "val_macro_f1": result["macro_f1"],
                   "per_class_f1": result["per_class_f1"], "confusion": result["confusion"],
                   "transport_cost_logit": None, "transport_cost_feature": None}
            if bank is not None:
                with torch.no_grad():
                    features = student.forward_features(data.rgb_tiles[data.rgb_train[probe]].to(self.device))
                partners = state["match"][probe]
                row["transport_cost_logit"] = transport_cost(features.logits.float().cpu(), bank.logits[partners])
                student_embedding, teacher_embedding = features.embedding.float().cpu(), bank.embeddings[partners]
                if projection is not None:
                    if student_embedding.shape[1] > teacher_embedding.shape[1]:
                        student_embedding = student_embedding @ projection
                    else:
                        teacher_embedding = teacher_embedding @ projection
                row["transport_cost_feature"] = transport_cost(student_embedding, teacher_embedding)
            return row

        def extra_state():
            if state["match"] is None:
                return {}
            return {"match": state["match"], "match_score": state["score"], "match_round": state["round"]}

        def restore_extra(saved):
            if "match" in saved:
                state.update(match=saved["match"], score=saved["match_score"], round=int(saved["match_round"]))

        meta = {"arch": section.arch, "in_channels": 3, "num_classes": n_classes,
                "class_names": list(data.student_classes), "tile_size": config.data.rgb_tile_size,
                "rgb_stats": data.rgb_stats.to_dict()}
        self.run_stage(StageSpec(
            "student", section.epochs, section.batch_size, len(data.rgb_train), modules, optimizer,
            build_scheduler(optimizer, section.epochs, config), train_step, evaluate, meta, select="student",
            score=lambda row: (row["val_oa"], row["val_macro_f1"]), after_epoch=after_epoch,
            extra_state=extra_state, restore_extra=restore_extra,
        ))
        self.stage_info["student"]["matching_rounds"] = state["round"] if match is not None else 0
        return student, self.stage_info["student"]

    # -- (f): outputs ---------------------------------------------------------------------------------
    def write_outputs(self, data: RunData, student: Backbone) -> dict[str, Any]:
        from safetensors.torch import save_file

        student.eval()
        n_classes = len(data.student_classes)
        batch = self.config.student.batch_size
        final: dict[str, Any] = {}
        prediction_rows = []
        for split, index in (("val", data.rgb_val), ("test", data.rgb_test)):
            logits = infer(student, data.rgb_tiles[index], self.device, batch, self.check)
            probabilities = torch.softmax(logits, dim=1)
            confidence, predicted = probabilities.max(dim=1)
            truth = data.rgb_labels[index]
            result = classification_metrics(truth, predicted, n_classes)
            final.update({f"{split}_oa": result["oa"], f"{split}_macro_f1": result["macro_f1"],
                          f"{split}_per_class_f1": result["per_class_f1"], f"{split}_confusion": result["confusion"]})
            prediction_rows += [(split, data.rgb_paths[i], data.student_classes[t], data.student_classes[p], f"{c:.6f}")
                                for i, t, p, c in zip(index.tolist(), truth.tolist(), predicted.tolist(), confidence.tolist())]
        final["best_epoch"] = self.stage_info["student"].get("best_epoch")
        write_csv_atomic(self.folder.root / "predictions.csv",
                         ("split", "path", "true_class", "predicted_class", "confidence"), prediction_rows)
        weights = self.folder.root / "student.safetensors"
        tmp = weights.with_name(weights.name + ".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}, str(tmp),
                  metadata={"format": "sembridge-student", "arch": student.arch})
        os.replace(tmp, weights)
        write_json_atomic(self.folder.root / "student.json", {
            "arch": student.arch, "in_channels": 3, "num_classes": n_classes,
            "class_names": list(data.student_classes), "tile_size": self.config.data.rgb_tile_size,
            "band_names": list(RGB_BAND_NAMES), "channel_stats": data.rgb_stats.to_dict(),
            "final_metrics": final, "config_hash": config_hash(self.config), "engine_version": __version__,
            "created": utc_now(), "teacher_classes": list(data.ms_classes),
            "distill": {"loss": self.config.distill.loss, "ssm": self.config.distill.ssm,
                        "dynm": self.config.distill.dynm, "ot1": self.config.distill.ot1, "ot2": self.config.distill.ot2},
        })
        return final

    def export(self) -> str | None:
        try:
            from ..export import export_bundle
        except ImportError:
            self.log("model bundle not written: sembridge_engine.export is not available", "warning")
            return None
        return str(export_bundle(self.folder.root, self.folder.root / "model.sembridge"))

    # -- the whole run ------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        config = self.config
        device_name = describe_device(self.device)
        self.log(f"device: {device_name}" + (" (mixed precision)" if self.amp else ""))
        self.folder.update_run_json(device=device_name, device_type=self.device.type)
        data = assemble_run_data(config, need_ms=config.uses_teacher, log=self.log, cancel=self.cancel)
        for problem in data.problems:
            self.log(str(problem), "warning")
        self.log(f"student classes: {', '.join(data.student_classes)}; RGB train/val/test = "
                 f"{len(data.rgb_train)}/{len(data.rgb_val)}/{len(data.rgb_test)}")
        teacher = matcher = None
        if config.uses_teacher:
            teacher = self.teacher_stage(data)
            if config.uses_matcher:
                matcher = self.matcher_stage(data)
        else:
            self.log("plain RGB baseline (loss 'none', no OT terms): no teacher, matcher or matching")
        student, _ = self.student_stage(data, teacher, matcher)
        final = self.write_outputs(data, student)
        bundle = self.export()
        history = [row for row in _read_jsonl(self.folder.metrics_path) if row.get("stage") == "student"]
        costs = [row for row in history if row.get("transport_cost_logit") is not None]
        teacher_info = self.stage_info.get("teacher", {})
        return {
            "status": "finished", "run_dir": str(self.folder.root), "device": device_name,
            "seconds": time.perf_counter() - self.started, "classes": list(data.student_classes),
            "stages": self.stage_info,
            "teacher_val_oa": teacher_info.get("best_val_oa"),
            "student_best_epoch": final["best_epoch"],
            "val_oa": final["val_oa"], "val_macro_f1": final["val_macro_f1"],
            "test_oa": final["test_oa"], "test_macro_f1": final["test_macro_f1"],
            "transport_cost_logit_first": costs[0]["transport_cost_logit"] if costs else None,
            "transport_cost_logit_last": costs[-1]["transport_cost_logit"] if costs else None,
            "transport_cost_feature_first": costs[0]["transport_cost_feature"] if costs else None,
            "transport_cost_feature_last": costs[-1]["transport_cost_feature"] if costs else None,
            "problems": len(data.problems), "bundle": bundle,
        }


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _execute(config: RunConfig, folder: RunFolder, callback: EventCallback, cancel: CancelToken | None) -> RunResult:
    try:
        folder.update_run_json(status="running", error=None)
        summary = _Run(config, folder, callback, cancel).run()
    except (Cancelled, KeyboardInterrupt) as error:
        folder.update_run_json(status="cancelled", error="cancelled by the user")
        callback(RunFailed(str(folder.root), "cancelled by the user", cancelled=True))
        if isinstance(error, KeyboardInterrupt):
            raise
        return RunResult(folder.root, {"status": "cancelled", "run_dir": str(folder.root)})
    except Exception as error:
        message = str(error) or type(error).__name__
        folder.update_run_json(status="failed", error=message)
        callback(RunFailed(str(folder.root), message))
        raise
    folder.update_run_json(status="finished", finished=utc_now(), summary=summary)
    callback(RunFinished(str(folder.root), summary))
    return RunResult(folder.root, summary)


def train(config: RunConfig, *, run_dir: Path | None = None, callback: EventCallback = ignore_event,
          cancel: CancelToken | None = None) -> RunResult:
    """Run all stages of ``config`` into a new run folder (or ``run_dir``, which must not hold a run)."""
    if run_dir is None:
        run_dir = new_run_dir(Path(config.output_dir) if config.output_dir else default_output_dir(), config.name)
    folder = RunFolder(Path(run_dir))
    if folder.run_json_path.exists():
        raise ValueError(f"{folder.root} already holds a run; use resume() / `sembridge resume` to continue it")
    folder.root.mkdir(parents=True, exist_ok=True)
    from ..config import save_config

    save_config(config, folder.config_path)
    folder.update_run_json(name=config.name, status="created", created=utc_now(), engine_version=__version__,
                           config_hash=config_hash(config), teacher_from=config.student.teacher_from or None)
    folder.write_metrics([])
    return _execute(config, folder, callback, cancel)


def resume(run_dir: Path, *, callback: EventCallback = ignore_event, cancel: CancelToken | None = None) -> RunResult:
    """Continue a cancelled or crashed run from its last epoch checkpoints (a finished run is returned as is)."""
    folder = RunFolder(Path(run_dir))
    if not folder.config_path.exists():
        raise ValueError(f"{folder.root}: not a SemBridge run folder (no config.toml)")
    info = folder.read_run_json()
    if info.get("status") == "finished":
        return RunResult(folder.root, info.get("summary", {}))
    config = load_config(folder.config_path)
    rows: list[dict[str, Any]] = []
    for stage in STAGES:
        path = folder.checkpoint(stage)
        if path.exists():
            rows += load_checkpoint(path)["history"]
    folder.write_metrics(rows)
    callback(LogLine(f"resuming {folder.root} ({len(rows)} finished stage-epochs kept)"))
    return _execute(config, folder, callback, cancel)
