"""The one seam between labelling and a model runtime.

Every model call of tile classification and scene labelling goes through a :class:`Predictor`:
raw windows in (native-dtype (C, h, w) pixels of the model's bands, as read), (N, K) class
probabilities out. The windowing, reading and writing code never touches a model or a tensor, so
the runtimes are interchangeable:

* ``torch``: the bundle's PyTorch model behind the training preprocessing (``preprocess_arrays``).
* ``onnx``: ONNX Runtime on the bundle's ``model.onnx``, which does that preprocessing inside the
  graph; this path never imports torch, so a labelling process (or a build without torch) starts
  fast and small. CUDA, DirectML and CoreML execution providers are used when onnxruntime offers them.

``auto`` picks onnx when onnxruntime is installed and the bundle has a raw-pixel graph, else torch.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

BACKENDS = ("auto", "onnx", "torch")
CPU_PROVIDER = "CPUExecutionProvider"
# device name -> onnxruntime execution provider; "auto" takes the first one onnxruntime offers.
ACCELERATORS = {"cuda": "CUDAExecutionProvider", "directml": "DmlExecutionProvider", "coreml": "CoreMLExecutionProvider"}


class Predictor(Protocol):
    """Class probabilities for raw windows."""

    device: Any            # what runs the model (str() of it is shown to users)
    model_bytes: int       # memory the model's weights take

    def predict(self, windows: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Raw (N, C, h, w) windows, or a list of (C, h, w) arrays of any sizes -> (N, K) float32 softmax probabilities."""
        ...


class TorchPredictor:
    """The bundle's PyTorch model in eval mode behind the training preprocessing; channels-last on CPU/CUDA."""

    def __init__(self, bundle, device: str) -> None:
        import torch

        from sembridge_engine.device import resolve_device

        self.bundle, self.device = bundle, resolve_device(device)
        model = bundle.model.to(self.device).eval()
        self.channels_last = self.device.type in ("cpu", "cuda")
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
        self.model_bytes = sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())

    def predict(self, windows: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        import torch

        from sembridge_engine.data.transforms import preprocess_arrays

        inputs = preprocess_arrays(windows if isinstance(windows, np.ndarray) else list(windows),
                                   self.bundle.tile_size, self.bundle.channel_stats).to(self.device)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return torch.softmax(self.model(inputs).float(), dim=1).cpu().numpy()


def onnx_providers(device: str) -> list:
    """onnxruntime execution providers for a device name: auto, cpu, cuda, cuda:N, directml, coreml."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    name = (device or "auto").lower()
    if name == "cpu":
        return [CPU_PROVIDER]
    if name == "auto":
        return [provider for provider in ACCELERATORS.values() if provider in available][:1] + [CPU_PROVIDER]
    kind, _, index = name.partition(":")
    provider = ACCELERATORS.get(kind)
    if provider is None:
        raise ValueError(f"unknown device {device!r} for the onnx backend; choose one of: auto, cpu, {', '.join(ACCELERATORS)}")
    if provider not in available:
        raise ValueError(f"device {device!r} needs onnxruntime's {provider}, which this onnxruntime does not offer "
                         f"(it has {', '.join(available)}); use --device auto or cpu")
    return [(provider, {"device_id": int(index)}) if index.isdigit() else provider, CPU_PROVIDER]


class OnnxPredictor:
    """ONNX Runtime on the bundle's raw-pixel graph, one session per window size (the graph is rewritten
    for sizes other than its own; see ``bundle.onnx_graph``)."""

    def __init__(self, bundle, device: str) -> None:
        import onnxruntime

        from sembridge_engine.data.readers import dtype_divisor

        if not bundle.has_pixels_onnx:
            raise ValueError(f"{bundle.path}: has no raw-pixel model.onnx (exported without ONNX or by an older SemBridge); "
                             "re-export it with 'sembridge export RUN_DIR' or use --backend torch")
        contract = bundle.metadata["onnx"]["input"]
        self.bundle, self.providers = bundle, onnx_providers(device)
        self.graph_window, self.graph_divisor = int(contract["window"]), float(dtype_divisor(contract["raw_dtype"]))
        self.options = onnxruntime.SessionOptions()
        self.options.log_severity_level = 3
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:  # same thread budget as torch gets from the variable
            self.options.intra_op_num_threads = int(threads)
        self.sessions: dict[tuple[int, int], Any] = {}
        first = self._session(self.graph_window, self.graph_window)
        self.device = f"onnxruntime {first.get_providers()[0]}"
        self.model_bytes = len(bundle.onnx_bytes)

    def _session(self, height: int, width: int):
        import onnxruntime

        from sembridge_engine.bundle.onnx_graph import graph_for_window

        key = (height, width)
        if key not in self.sessions:
            graph = self.bundle.onnx_bytes
            if key != (self.graph_window, self.graph_window):
                graph = graph_for_window(graph, height, width, self.bundle.tile_size)
            self.sessions[key] = onnxruntime.InferenceSession(graph, self.options, providers=self.providers)
        return self.sessions[key]

    def _pixels(self, windows: np.ndarray) -> np.ndarray:
        """float32 values the graph divides as training divided this dtype (scale_by_dtype's rule)."""
        from sembridge_engine.data.readers import dtype_divisor

        factor = self.graph_divisor / dtype_divisor(windows.dtype)
        pixels = windows.astype(np.float32, copy=False)
        return pixels * np.float32(factor) if factor != 1.0 else pixels

    def _run(self, batch: np.ndarray) -> np.ndarray:
        session = self._session(int(batch.shape[2]), int(batch.shape[3]))
        return session.run(["probabilities"], {"pixels": self._pixels(batch)})[0]

    def predict(self, windows: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        if isinstance(windows, np.ndarray):
            return self._run(windows if windows.ndim == 4 else windows[None])
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for position, array in enumerate(windows):
            by_shape.setdefault(array.shape[1:], []).append(position)
        out = np.empty((len(windows), self.bundle.num_classes), dtype=np.float32)
        for positions in by_shape.values():
            out[positions] = self._run(np.stack([windows[position] for position in positions]))
        return out


def check_probabilities(probabilities: np.ndarray, model_name: str) -> np.ndarray:
    """Refuse NaN or infinite model outputs (broken weights or normalisation) instead of printing or writing them."""
    if not np.isfinite(probabilities).all():
        raise ValueError(f"{model_name}: the model gave NaN or infinite probabilities (its weights or normalisation "
                         "are broken); re-export it from its run")
    return probabilities


PREDICTORS: dict[str, Callable[..., Predictor]] = {"torch": TorchPredictor, "onnx": OnnxPredictor}


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def open_bundle(path, backend: str = "auto"):
    """The bundle at ``path`` loaded for ``backend``: metadata and ONNX graph only (no torch) for onnx,
    the PyTorch model for torch; ``auto`` takes onnx when onnxruntime is installed and the bundle has the graph."""
    from sembridge_engine.bundle.format import BundleError, read_bundle_info

    if backend not in BACKENDS:
        raise ValueError(f"unknown inference backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend in ("auto", "onnx"):
        info = read_bundle_info(Path(path))
        if backend == "onnx" or (onnxruntime_installed() and info.has_pixels_onnx):
            return info
    try:
        from sembridge_engine.bundle.model import load_bundle
    except ModuleNotFoundError:  # the labelling-only build (installers/) has no torch
        why = "--backend torch" if backend == "torch" else "it has no raw-pixel model.onnx (or onnxruntime is missing)"
        raise BundleError(f"{path}: needs PyTorch ({why}), which this installation does not have; "
                          "re-export the bundle with 'sembridge export' to give it its ONNX graph") from None
    return load_bundle(path)


def make_predictor(bundle, device: str = "auto", backend: str = "auto") -> Predictor:
    """A predictor for ``bundle`` on ``device`` with the named runtime (``auto``: torch when the bundle was
    loaded with its PyTorch model, onnx when it was opened without; see :func:`open_bundle`)."""
    if backend == "auto":
        backend = "torch" if hasattr(bundle, "model") else "onnx"
    try:
        factory = PREDICTORS[backend]
    except KeyError:
        raise ValueError(f"unknown inference backend {backend!r}; choose one of: {', '.join(BACKENDS)}") from None
    return factory(bundle, str(device))
