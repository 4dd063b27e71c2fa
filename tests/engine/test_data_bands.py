import pytest

from sembridge_engine.data.bands import TIANGONG2_14, get_preset, guess_preset


def test_eurosat13_has_b8a_last_and_rgb_at_3_2_1():
    preset = get_preset("sentinel2_eurosat13")
    assert preset.band_names[-1] == "B8A"
    assert preset.band_names[:12] == tuple(f"B{number:02d}" for number in range(1, 13))
    assert preset.rgb_bands == ("B04", "B03", "B02")
    assert preset.rgb_indices == (3, 2, 1)


def test_sentinel2_10_tiangong_and_rgb_presets():
    s2_10 = get_preset("sentinel2_10")
    assert s2_10.band_names == ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    assert s2_10.rgb_indices == (2, 1, 0)
    tiangong = get_preset("tiangong2_14")
    assert len(tiangong.band_names) == 14 and tiangong.rgb_indices == (6, 4, 2)
    assert tiangong is TIANGONG2_14
    assert get_preset("rgb").rgb_indices == (0, 1, 2)


def test_custom_preset_and_errors():
    custom = get_preset("custom", ["blue", "green", "red", "nir"], ["red", "green", "blue"])
    assert custom.rgb_indices == (2, 1, 0)
    with pytest.raises(ValueError, match="sentinel2_eurosat13.*custom"):
        get_preset("landsat9")
    with pytest.raises(ValueError, match="not among its bands"):
        get_preset("custom", ["a", "b", "c"], ["a", "b", "x"])
    with pytest.raises(ValueError, match="custom_bands"):
        get_preset("custom")


def test_guess_preset_by_band_count():
    assert guess_preset(13).name == "sentinel2_eurosat13"
    assert guess_preset(10).name == "sentinel2_10"
    assert guess_preset(14).name == "tiangong2_14"
    assert guess_preset(12).name == "sentinel2_l2a12"
    assert guess_preset(7) is None
