"""Per-stage checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and primitive containers (no pickled objects), so loading one
never executes code. RNG states are stored as tensors / lists for the same reason.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_output


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read (corrupt, truncated, or from an incompatible run)."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temp file in the same folder, then rename: a crash or a full disk never leaves half a file."""
    with atomic_output(path) as temporary:
        torch.save(state, temporary)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as error:  # torch raises several types for damaged zip/pickle data
        raise CheckpointError(
            f"{path}: checkpoint is corrupt or truncated and cannot be loaded ({type(error).__name__}: {error}); "
            "delete it to retrain that stage from scratch"
        ) from None
    if not isinstance(state, dict) or "stage" not in state or "epoch" not in state:
        raise CheckpointError(f"{path}: not a SemBridge checkpoint (missing 'stage'/'epoch')")
    return state


def capture_rng_state() -> dict[str, Any]:
    """Global RNG states (torch, numpy, python) as tensors and lists."""
    numpy_state = np.random.get_state(legacy=True)
    python_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_key": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_pos": int(numpy_state[2]),
        "numpy_has_gauss": int(numpy_state[3]),
        "numpy_gauss": float(numpy_state[4]),
        "python_version": int(python_state[0]),
        "python_state": list(python_state[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state((
        "MT19937", state["numpy_key"].numpy().astype(np.uint32), state["numpy_pos"],
        state["numpy_has_gauss"], state["numpy_gauss"],
    ))
    random.setstate((state["python_version"], tuple(state["python_state"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state (for 'best epoch' snapshots and checkpoints)."""
    return {key: value.detach().to("cpu", copy=True) for key, value in module.state_dict().items()}
