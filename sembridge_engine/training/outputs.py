"""Stage (f): what a finished run leaves for its users: test predictions, the student's weights and
description (student.json), and the shareable model bundle built from them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..atomic import atomic_output, write_csv_atomic, write_json_atomic
from ..bundle import BUNDLE_SUFFIX, BundleError, build_model, load_weights, write_bundle
from ..colours import default_colours
from ..config import config_hash
from ..metrics import classification_metrics
from ..models.backbones import Backbone
from .context import RunContext
from .dataset import RGB_BAND_NAMES, RunData
from .rundir import PREDICTIONS_HEADER, RunFolder, utc_now

RGB_GEOMETRY_NAME = "rgb_train_geometry.csv"  # per training image: size in pixels and ground sampling distance
STUDENT_JSON_KEYS = ("arch", "in_channels", "num_classes", "class_names", "tile_size", "band_names", "channel_stats")


def write_outputs(ctx: RunContext, data: RunData, student: Backbone) -> dict[str, Any]:
    """Val/test metrics and predictions of the selected student, its safetensors weights and student.json
    (the files by rank 0 only under torchrun)."""
    from safetensors.torch import save_file

    student.eval()
    n_classes = len(data.student_classes)
    final: dict[str, Any] = {}
    prediction_rows = []
    for split, index in (("val", data.rgb_val), ("test", data.rgb_test)):
        logits = ctx.infer(student, data.rgb_tiles.subset(index), ctx.config.student.batch_size)
        probabilities = torch.softmax(logits, dim=1)
        confidence, predicted = probabilities.max(dim=1)
        truth = data.rgb_labels[index]
        result = classification_metrics(truth, predicted, n_classes)
        final.update({f"{split}_oa": result["oa"], f"{split}_macro_f1": result["macro_f1"],
                      f"{split}_per_class_f1": result["per_class_f1"], f"{split}_confusion": result["confusion"]})
        prediction_rows += [(split, data.rgb_paths[i], data.student_classes[t], data.student_classes[p], f"{c:.6f}")
                            for i, t, p, c in zip(index.tolist(), truth.tolist(), predicted.tolist(), confidence.tolist())]
    final["best_epoch"] = ctx.stage_info["student"].get("best_epoch")
    if not ctx.writes:  # every rank computed the metrics; rank 0 writes the files
        return final
    folder = ctx.folder
    write_csv_atomic(folder.predictions_path, PREDICTIONS_HEADER, prediction_rows)
    with atomic_output(folder.student_weights_path) as temporary:
        save_file({k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}, str(temporary),
                  metadata={"format": "sembridge-student", "arch": student.arch})
    distill = ctx.config.distill
    write_json_atomic(folder.student_json_path, {
        "arch": student.arch, "in_channels": 3, "num_classes": n_classes,
        "class_names": list(data.student_classes), "tile_size": ctx.config.data.rgb_tile_size,
        "band_names": list(RGB_BAND_NAMES), "channel_stats": data.rgb_stats.to_dict(),
        "final_metrics": final, "config_hash": config_hash(ctx.config), "engine_version": __version__,
        "created": utc_now(), "teacher_classes": list(data.ms_classes),
        "distill": {"loss": distill.loss, "ssm": distill.ssm, "dynm": distill.dynm, "ot1": distill.ot1, "ot2": distill.ot2},
        "footprint": data.rgb_footprint, "input_radiometry": data.rgb_radiometry,
    })
    write_csv_atomic(folder.root / RGB_GEOMETRY_NAME, ("path", "width", "height", "gsd_m"),
                     [(path, width, height, "" if gsd is None else gsd) for path, width, height, gsd in data.rgb_train_images])
    return final


def _read_student_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BundleError(f"{path}: not found; the run has no trained student yet (train the student stage first)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(info, dict):
        raise BundleError(f"{path}: must hold a JSON object")
    missing = [key for key in STUDENT_JSON_KEYS if key not in info]
    if missing:
        raise BundleError(f"{path}: missing key(s) {', '.join(repr(key) for key in missing)}")
    return info


def export_bundle(run_dir: Path, out: Path | None = None, *, check_onnx: bool = True) -> Path:
    """Write the run's student as a ``.sembridge`` bundle (default ``run_dir/model.sembridge``), atomically."""
    from safetensors.torch import load_file

    folder = RunFolder(Path(run_dir))
    out = Path(out) if out is not None else folder.root / f"model{BUNDLE_SUFFIX}"
    info = _read_student_json(folder.student_json_path)
    source = str(folder.student_json_path)
    weights_path = folder.student_weights_path
    if not weights_path.is_file():
        raise BundleError(f"{weights_path}: not found; the run has no trained student weights")
    try:
        class_names = [str(name) for name in info["class_names"]]
        arch, in_channels, tile_size = str(info["arch"]), int(info["in_channels"]), int(info["tile_size"])
        stats = info["channel_stats"]
        metadata = {
            "architecture": arch, "in_channels": in_channels, "num_classes": len(class_names),
            "class_names": class_names, "class_colours": default_colours(class_names),
            "band_names": [str(name) for name in info["band_names"]], "tile_size": tile_size,
            "channel_stats": {"mean": list(stats["mean"]), "std": list(stats["std"])},
            "training": {"run": folder.root.name, "final_metrics": info.get("final_metrics", {}),
                         "trained_with_engine": info.get("engine_version", ""), "trained": info.get("created", "")},
            "config_hash": str(info.get("config_hash", "")), "created": utc_now(),
        }
        metadata.update({key: info[key] for key in ("footprint", "input_radiometry") if info.get(key) is not None})
    except (TypeError, ValueError, KeyError) as error:
        raise BundleError(f"{source}: malformed value ({type(error).__name__}: {error})") from None
    if len(class_names) != int(info["num_classes"]):
        raise BundleError(f"{source}: 'class_names' lists {len(class_names)} classes but 'num_classes' is {info['num_classes']}")
    model = build_model(arch, in_channels, len(class_names), source)
    try:
        tensors = load_file(str(weights_path))
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise BundleError(f"{weights_path}: not a readable safetensors file ({error})") from None
    load_weights(model, tensors, len(class_names), str(weights_path), arch)
    return write_bundle(out, model, metadata, check_onnx=check_onnx)


def export_run(ctx: RunContext) -> str:
    """The run's own bundle, written at the end of training."""
    return str(export_bundle(ctx.folder.root, ctx.folder.bundle_path))

