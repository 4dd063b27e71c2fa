"""Device choice: CUDA, then Apple MPS, then CPU; the training code never names a device literally."""
from __future__ import annotations

import os

import torch


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available, then mps, then cpu; an explicit name must be available."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    if name == "mps" and not _mps_available():
        raise ValueError("device 'mps' requested but Apple MPS is not available; use 'auto' or 'cpu'")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}; choose one of: auto, cpu, cuda, mps")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """Human name: the GPU's name, "Apple MPS", or "CPU (n threads)"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


def list_devices() -> list[tuple[str, str]]:
    """(config name, human name) of every usable device, "auto" first, for the GUI's chooser."""
    devices = [("auto", f"Automatic ({describe_device(resolve_device('auto'))})")]
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        devices.append((f"cuda:{index}", torch.cuda.get_device_name(index)))
    if _mps_available():
        devices.append(("mps", "Apple MPS"))
    devices.append(("cpu", describe_device(torch.device("cpu"))))
    return devices


def usable_cpus() -> int:
    """CPUs this process may run on (respects affinity / container limits where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def configure_device(device: torch.device) -> None:
    """cudnn autotuning only on CUDA; on CPU use every core unless OMP_NUM_THREADS says otherwise."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(usable_cpus())


def uses_amp(device: torch.device) -> bool:
    """Mixed precision only where it is fast and well supported (CUDA)."""
    return device.type == "cuda"
