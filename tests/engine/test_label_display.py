"""Reading a scene and its labelled map for display: reduced to a pixel budget, any window, the
labelled rasters of an area of interest placed where they lie in the scene."""
import numpy as np
import rasterio

from resources import demo_project
from sembridge_engine.labelling.display import UNLABELLED, read_labels_view, read_scene_view, scene_stretch
from sembridge_engine.labelling.options import PixelWindow

SCENE = demo_project() / "scene" / "scene_subset.tif"


def test_a_scene_is_read_reduced_and_windows_match_the_whole():
    with rasterio.open(SCENE) as dataset:
        width, height = dataset.width, dataset.height
    stretch = scene_stretch(SCENE, [1, 2, 3])
    overview = read_scene_view(SCENE, [1, 2, 3], max_side=64, stretch=stretch)
    assert overview.window == PixelWindow(0, 0, width, height)
    assert max(overview.rgb.shape[:2]) == 64 and overview.rgb.shape[2] == 3 and overview.rgb.dtype == np.uint8
    full = read_scene_view(SCENE, [1, 2, 3], max_side=max(width, height), stretch=stretch)
    crop = read_scene_view(SCENE, [1, 2, 3], PixelWindow(10, 20, 100, 50), max_side=4096, stretch=stretch)
    assert crop.rgb.shape == (50, 100, 3)
    assert np.array_equal(crop.rgb, full.rgb[20:70, 10:110]), "a window read is that part of the whole"
    assert read_scene_view(SCENE, [1, 2, 3], PixelWindow(width - 5, 0, 50, 50), stretch=stretch).window.width == 5


def test_labels_of_an_area_of_interest_lie_where_it_is_in_the_scene(tmp_path):
    area = PixelWindow(30, 40, 60, 20)
    with rasterio.open(SCENE) as dataset:
        transform = dataset.window_transform(rasterio.windows.Window(area.col, area.row, area.width, area.height))
        crs = dataset.crs
    profile = {"driver": "GTiff", "width": area.width, "height": area.height, "count": 1, "crs": crs,
               "transform": transform}
    with rasterio.open(tmp_path / "classes.tif", "w", dtype="uint16", nodata=65535, **profile) as out:
        out.write(np.full((1, area.height, area.width), 300, dtype=np.uint16))
    with rasterio.open(tmp_path / "confidence.tif", "w", dtype="float32", nodata=-1, **profile) as out:
        out.write(np.full((1, area.height, area.width), 0.75, dtype=np.float32))
    view = read_labels_view(tmp_path / "classes.tif", tmp_path / "confidence.tif", SCENE, PixelWindow(0, 0, 200, 100),
                            max_side=4096)
    assert view.classes.shape == (100, 200)
    inside = np.zeros_like(view.classes, dtype=bool)
    inside[40:60, 30:90] = True
    assert (view.classes[inside] == 300).all() and (view.classes[~inside] == UNLABELLED).all()  # a 300-class map
    assert np.allclose(view.confidence[inside], 0.75) and np.isnan(view.confidence[~inside]).all()
