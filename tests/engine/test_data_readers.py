"""Reading real files, RGB conversions, and a specific message for every kind of bad file."""

import numpy as np
import pytest
import rasterio
from PIL import Image

from sembridge_engine.data.problems import ImageReadError, Problem
from sembridge_engine.data.readers import read_image, scale_by_dtype

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def test_reads_eurosat_tile_natively(data_demo_tile):
    array = read_image(data_demo_tile)
    assert array.shape == (13, 64, 64) and array.dtype == np.uint16
    assert np.array_equal(read_image(data_demo_tile, bands=[3, 2, 1]), array[[3, 2, 1]])


def test_rgb_conversions_grey_rgba_palette(tmp_path, data_demo_rgb_image):
    rgb = Image.open(data_demo_rgb_image).convert("RGB")
    reference = np.asarray(rgb).transpose(2, 0, 1)
    rgb.convert("L").save(tmp_path / "grey.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(tmp_path / "rgba.png")
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.save(tmp_path / "palette.png")

    grey = read_image(tmp_path / "grey.png")
    assert grey.shape == (3, *reference.shape[1:]) and grey.dtype == np.uint8
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[0], grey[2])
    assert np.array_equal(read_image(tmp_path / "rgba.png"), reference)
    from_palette = read_image(tmp_path / "palette.png")
    assert from_palette.shape == reference.shape
    assert np.array_equal(from_palette, np.asarray(palette.convert("RGB")).transpose(2, 0, 1))


def test_grey_geotiff_replicated_in_rgb_mode_and_many_bands_rejected(tmp_path, data_demo_tile):
    with rasterio.open(data_demo_tile) as source:
        profile, data = source.profile, source.read()
    profile.update(count=1)
    with rasterio.open(tmp_path / "grey.tif", "w", **profile) as target:
        target.write(data[:1])
    assert read_image(tmp_path / "grey.tif").shape == (1, 64, 64)
    assert read_image(tmp_path / "grey.tif", as_rgb=True).shape == (3, 64, 64)
    with pytest.raises(ImageReadError, match="has 13 bands; RGB imagery must have") as raised:
        read_image(data_demo_tile, as_rgb=True)
    assert raised.value.path == str(data_demo_tile)


def test_palette_geotiff_expanded_in_rgb_mode(tmp_path, data_demo_rgb_image):
    palette = Image.open(data_demo_rgb_image).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    indices = np.asarray(palette)
    colours = np.asarray(palette.getpalette()[:48], np.uint8).reshape(16, 3)
    path = tmp_path / "palette.tif"
    with rasterio.open(path, "w", driver="GTiff", width=indices.shape[1], height=indices.shape[0],
                       count=1, dtype="uint8", photometric="palette") as target:
        target.write(indices, 1)
        target.write_colormap(1, {index: (*colour, 255) for index, colour in enumerate(colours)})
    expected = colours[indices].transpose(2, 0, 1)
    assert np.array_equal(read_image(path, as_rgb=True), expected)


def test_bad_files_raise_errors_naming_the_file(tmp_path, data_demo_tile, data_demo_rgb_image):
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(data_demo_tile.read_bytes()[:30000])
    truncated_png = tmp_path / "truncated.png"
    truncated_png.write_bytes(data_demo_rgb_image.read_bytes()[:20000])
    empty = tmp_path / "empty.tif"
    empty.touch()
    not_image = tmp_path / "text.tif"
    not_image.write_text("this is not a GeoTIFF")
    cases = {truncated: "corrupt or truncated", truncated_png: "corrupt or truncated", empty: r"empty file \(0 bytes\)",
             not_image: "not a readable GeoTIFF"}
    for path, reason in cases.items():
        with pytest.raises(ImageReadError, match=reason) as raised:
            read_image(path)
        assert raised.value.path == str(path) and str(path) in str(raised.value)


def test_all_nodata_geotiff_rejected(tmp_path, data_demo_tile):
    with rasterio.open(data_demo_tile) as source:
        profile = source.profile
    profile.update(nodata=0)
    path = tmp_path / "nodata.tif"
    with rasterio.open(path, "w", **profile) as target:
        target.write(np.zeros((13, 64, 64), dtype=np.uint16))
    with pytest.raises(ImageReadError, match="every pixel is nodata") as raised:
        read_image(path)
    assert raised.value.path == str(path)


def test_scale_by_dtype():
    assert scale_by_dtype(np.array([255], np.uint8))[0] == pytest.approx(1.0)
    assert scale_by_dtype(np.array([5000], np.uint16))[0] == pytest.approx(0.5)
    assert scale_by_dtype(np.array([-10000], np.int16))[0] == pytest.approx(-1.0)
    floats = np.array([0.25], np.float64)
    assert scale_by_dtype(floats).dtype == np.float32 and scale_by_dtype(floats)[0] == pytest.approx(0.25)


def test_problem_str_names_path():
    assert str(Problem("/a/b.tif", "broken")) == "/a/b.tif: broken"
