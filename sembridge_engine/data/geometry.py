"""Ground sampling distance (metres per pixel) of a georeferenced raster.

Projected CRS: the transform's pixel size times the CRS's linear unit. Geographic CRS: one pixel
step measured on the CRS's ellipsoid at the image centre (a degree of longitude shrinks with the
cosine of the latitude). Training records it for the RGB images, labelling for the scene, so the
model's footprint on the ground can be matched.
"""
from __future__ import annotations

import math


def pixel_size_m(crs, transform, width: int, height: int) -> tuple[float, float] | None:
    """(x, y) metres per pixel, or None when the raster has no CRS or a CRS without metric units."""
    if crs is None or transform is None or transform.is_identity:
        return None
    step_x = math.hypot(transform.a, transform.d)
    step_y = math.hypot(transform.b, transform.e)
    if not (step_x > 0 and step_y > 0):
        return None
    if crs.is_geographic:
        from pyproj import CRS, Geod

        ellipsoid = CRS.from_user_input(crs.to_wkt()).ellipsoid
        geod = Geod(a=ellipsoid.semi_major_metre, rf=ellipsoid.inverse_flattening) if ellipsoid else Geod(ellps="WGS84")
        lon, lat = transform @ (width / 2, height / 2)
        lat = max(-89.9, min(89.9, lat))
        right = transform @ (width / 2 + 1, height / 2)
        below = transform @ (width / 2, height / 2 + 1)
        metres_x = geod.inv(lon, lat, right[0], max(-89.9, min(89.9, right[1])))[2]
        metres_y = geod.inv(lon, lat, below[0], max(-89.9, min(89.9, below[1])))[2]
        return (float(metres_x), float(metres_y)) if metres_x > 0 and metres_y > 0 else None
    try:
        _, factor = crs.linear_units_factor
    except Exception:  # rasterio raises CRSError for CRSs without a linear unit
        return None
    return float(step_x * factor), float(step_y * factor)


def ground_sampling_distance(crs, transform, width: int, height: int) -> float | None:
    """Mean of the x and y pixel sizes in metres (None when unknown)."""
    size = pixel_size_m(crs, transform, width, height)
    return None if size is None else (size[0] + size[1]) / 2


def training_footprint(headers, default_gsd: float = 0.0) -> dict | None:
    """The ground one training image covers: metres across (mean of width and height times the GSD).

    ``headers`` are the training images' ImageHeaders; an image's GSD is its GeoTIFF's, else
    ``default_gsd`` (the config's ``data.rgb_gsd``; 0 = unknown). None when no image has a GSD.
    """
    import numpy as np

    sizes, gsds, sources = [], [], set()
    for header in headers:
        gsd = header.gsd or default_gsd or None
        if gsd is None:
            continue
        sources.add("geotiff" if header.gsd else "config")
        sizes.append((header.width + header.height) / 2)
        gsds.append(gsd)
    if not gsds:
        return None
    metres = np.asarray(sizes) * np.asarray(gsds)
    return {
        "metres": round(float(np.median(metres)), 4),
        "metres_min": round(float(metres.min()), 4),
        "metres_max": round(float(metres.max()), 4),
        "metres_std": round(float(metres.std()), 4),
        "gsd_m": round(float(np.median(gsds)), 6),
        "image_px": round(float(np.median(sizes)), 2),
        "images": len(gsds),
        "images_without_gsd": len(headers) - len(gsds),
        "gsd_source": "+".join(sorted(sources)),
    }
