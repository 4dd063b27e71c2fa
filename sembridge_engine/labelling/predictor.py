"""The one seam between labelling and a model runtime.

Every model call of tile classification and scene labelling goes through a :class:`Predictor`:
preprocessed (N, C, S, S) float32 inputs in, (N, K) class probabilities out. The windowing,
reading and writing code never touches the model itself, so another runtime (e.g. ONNX Runtime on
the bundle's ``model.onnx``) is one more class registered in :data:`PREDICTORS`.
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch


class Predictor(Protocol):
    """Class probabilities for a batch of model inputs."""

    device: torch.device

    def predict(self, inputs: torch.Tensor) -> np.ndarray:
        """(N, C, S, S) float32 preprocessed inputs -> (N, K) float32 softmax probabilities."""
        ...


class TorchPredictor:
    """The bundle's PyTorch model in eval mode; channels-last on CPU/CUDA, where convolutions run faster."""

    def __init__(self, bundle, device: torch.device) -> None:
        self.device = device
        model = bundle.model.to(device).eval()
        self.channels_last = device.type in ("cpu", "cuda")
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model

    def predict(self, inputs: torch.Tensor) -> np.ndarray:
        inputs = inputs.to(self.device)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return torch.softmax(self.model(inputs).float(), dim=1).cpu().numpy()


PREDICTORS: dict[str, Callable[..., Predictor]] = {"torch": TorchPredictor}


def make_predictor(bundle, device: str | torch.device = "auto", backend: str = "torch") -> Predictor:
    """A predictor for ``bundle`` on ``device`` (``auto``: CUDA, then MPS, then CPU) with the named runtime."""
    from sembridge_engine.device import resolve_device

    try:
        factory = PREDICTORS[backend]
    except KeyError:
        raise ValueError(f"unknown inference backend {backend!r}; choose one of: {', '.join(PREDICTORS)}") from None
    return factory(bundle, device if isinstance(device, torch.device) else resolve_device(device))
