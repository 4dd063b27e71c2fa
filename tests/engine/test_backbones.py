"""Backbone registry: any band count and tile size, all taps, one trunk pass, ONNX/safetensors-friendly."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torchvision import models

from resources import demo_project
from sembridge_engine.models import BACKBONES, available_backbones, build_backbone

torch.set_num_threads(1)
ARCHS = ["resnet34", "mobilenet_v2", "shufflenet_v2_x1_0", "shufflenet_v2_x0_5"]


def _real_tiles(modality: str, count: int, size: int) -> torch.Tensor:
    """Real demo imagery scaled by dtype and resized (the data layer's preprocessing, unnormalised)."""
    from sembridge_engine.data.readers import read_image
    from sembridge_engine.data.transforms import preprocess_arrays

    folder = demo_project() / modality / "Forest"
    paths = sorted(path for path in folder.iterdir() if path.suffix.lower() in {".tif", ".png", ".jpg"})[:count]
    return preprocess_arrays([read_image(path, as_rgb=modality == "rgb") for path in paths], size, None)


def test_registry_lists_the_four_architectures():
    assert available_backbones() == sorted(ARCHS)
    assert set(BACKBONES) == set(ARCHS)


@pytest.mark.parametrize("in_channels", [13, 3])
@pytest.mark.parametrize("arch", ARCHS)
def test_taps_have_consistent_shapes_and_gradients_flow(arch, in_channels):
    torch.manual_seed(0)
    model = build_backbone(arch, in_channels, num_classes=5)
    x = torch.randn(4, in_channels, 32, 32)
    features = model.forward_features(x)
    assert features.feature_map.shape == (4, model.feature_channels, 1, 1)
    assert features.intermediate.shape == (4, model.intermediate_channels, 2, 2)
    assert features.embedding.shape == (4, model.embedding_dim)
    assert features.logits.shape == (4, 5)
    features.logits.logsumexp(1).mean().backward()
    first_conv = next(module for module in model.modules() if isinstance(module, torch.nn.Conv2d)).weight
    assert first_conv.shape[1] == in_channels
    assert first_conv.grad is not None and torch.isfinite(first_conv.grad).all() and first_conv.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_features(x).logits)


@pytest.mark.parametrize("arch", ARCHS)
def test_first_conv_keeps_torchvision_hyper_parameters(arch):
    original = BACKBONES[arch].factory(weights=None).get_submodule(BACKBONES[arch].first_conv)
    replaced = next(module for module in build_backbone(arch, 7, 2).modules() if isinstance(module, torch.nn.Conv2d))
    assert replaced.in_channels == 7
    for attribute in ("out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode"):
        assert getattr(replaced, attribute) == getattr(original, attribute)
    assert (replaced.bias is None) == (original.bias is None)


def test_same_channels_as_torchvision_and_one_trunk_pass():
    model = build_backbone("resnet34", 3, 4)
    assert (model.intermediate_channels, model.feature_channels) == (256, 512)
    calls = []
    model.to_intermediate.register_forward_hook(lambda *_: calls.append("intermediate"))
    model.to_feature_map.register_forward_hook(lambda *_: calls.append("feature_map"))
    model.forward_features(torch.randn(2, 3, 32, 32))
    assert calls == ["intermediate", "feature_map"]
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in models.resnet34(weights=None, num_classes=4).parameters())


def test_real_multispectral_and_rgb_tiles_any_size():
    torch.manual_seed(0)
    ms = _real_tiles("ms", 4, 64)
    rgb = _real_tiles("rgb", 4, 48)
    assert ms.shape == (4, 13, 64, 64) and rgb.shape == (4, 3, 48, 48)
    teacher = build_backbone("shufflenet_v2_x0_5", 13, 6).eval()
    student = build_backbone("mobilenet_v2", 3, 6).eval()
    with torch.no_grad():
        assert torch.isfinite(teacher(ms)).all() and teacher(ms).shape == (4, 6)
        assert student.forward_features(rgb).feature_map.shape[-2:] == (2, 2)
        assert torch.isfinite(student(rgb)).all()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_forward_exports_to_onnx_with_dynamic_size_and_saves_as_safetensors(tmp_path):
    import onnxruntime
    from safetensors.torch import load_file, save_file

    model = build_backbone("shufflenet_v2_x0_5", 4, 3).eval()
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.randn(2, 4, 32, 32),), buffer, input_names=["tiles"], output_names=["logits"],
                      dynamic_axes={"tiles": {0: "batch", 2: "height", 3: "width"}}, dynamo=False)
    session = onnxruntime.InferenceSession(buffer.getvalue())
    x = torch.randn(3, 4, 48, 48)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"tiles": x.numpy()})[0], model(x).numpy(), atol=1e-4)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    reloaded = build_backbone("shufflenet_v2_x0_5", 4, 3).eval()
    reloaded.load_state_dict(load_file(tmp_path / "model.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'.*resnet34"):
        build_backbone("vgg", 3, 2)
    with pytest.raises(ValueError, match="in_channels"):
        build_backbone("resnet34", 0, 2)
