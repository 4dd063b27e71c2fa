"""The NumPy resize matrices reproduce PyTorch's antialiased bilinear resize (training's resize_tiles)."""
import numpy as np
import pytest
import torch

from sembridge_engine.data.readers import read_image
from sembridge_engine.data.resampling import resize_matrix
from sembridge_engine.data.transforms import resize_tiles

from .labelling_fixtures import demo_non_square_rgb


@pytest.mark.parametrize("in_size, out_size", [(256, 64), (249, 64), (100, 37), (17, 5), (32, 64), (48, 64), (1, 4), (64, 64)])
def test_resize_matrix_is_torchs_resampling(in_size, out_size):
    image = torch.rand(2, 3, in_size, in_size + 7, generator=torch.Generator().manual_seed(in_size))
    expected = torch.nn.functional.interpolate(image, size=(out_size, out_size), mode="bilinear", antialias=True, align_corners=False)
    got = resize_matrix(in_size, out_size) @ image.numpy() @ resize_matrix(in_size + 7, out_size).T
    np.testing.assert_allclose(got, expected.numpy(), atol=2e-6)
    assert np.allclose(resize_matrix(in_size, out_size).sum(axis=1), 1.0, atol=1e-6)


def test_resize_matrix_on_a_real_photo_matches_resize_tiles():
    from sembridge_engine.data.readers import scale_by_dtype

    pixels = scale_by_dtype(read_image(demo_non_square_rgb(), as_rgb=True))
    assert pixels.shape == (3, 249, 256)
    expected = resize_tiles(torch.from_numpy(pixels), 48).numpy()
    np.testing.assert_allclose(resize_matrix(249, 48) @ pixels @ resize_matrix(256, 48).T, expected, atol=2e-6)


def test_resize_matrix_rejects_empty_sizes():
    with pytest.raises(ValueError, match="positive"):
        resize_matrix(0, 4)
