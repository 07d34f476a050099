"""The files of a predicted slide, from its stitched map and its tissue.

In the slide's folder, for slide ``STEM``:

- ``STEM.map.npy``: the slide map (float16, one pixel per ``map_level0_downsample`` level-0
  pixels), 0 off the tissue;
- ``STEM.heatmap.tif``: the same map as a tiled pyramidal TIFF, 8-bit grey round(255·p), with its
  physical pixel size and its exact level-0 downsample on every page (``export.write_heatmap``);
  ``STEM.heatmap-rgba.tif`` with ``heatmap_rgba``: the colour map with the value as alpha;
- ``STEM.thumbnail.png``, ``STEM.tissue.png`` (the tissue mask, 0/255, at the thumbnail's scale)
  and ``STEM.tissue.geojson`` (its contours, class ``Tissue``);
- ``STEM.overlay.png``: the map on the thumbnail, opacity growing with the value, only on tissue,
  with its colour bar and scale bar (``legend.py``);
- ``STEM.region.png`` and ``STEM.region.geojson``: the region at the threshold
  (``histocam.wsi.maps.region_mask``), on a grid of at most ``REGION_MAX_SIDE`` pixels.

GeoJSON coordinates are level-0 pixels (QuPath: File › Import objects).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histocam.core.visual import colormap_lut, overlay
from histocam.predict.export import save_png, write_heatmap, write_heatmap_rgba
from histocam.predict.legend import add_legend
from histocam.wsi.geojson import region_features, write_geojson
from histocam.wsi.maps import block_mean, region_mask, resample_mask, resample_values
from histocam.wsi.tissue import TissueMask

REGION_MAX_SIDE = 2048
REGION_COLOR = (255, 0, 0)
TISSUE_COLOR = (20, 120, 20)


@dataclass
class MapInfo:
    """What the map is and how to draw and threshold it."""

    title: str  # the colour bar's title, e.g. "P(tumor) of the tiles"
    region_name: str  # the region's class name
    threshold: float | None
    threshold_source: str
    overlay_scale: str  # fixed | pNN
    regions: bool
    region_smooth_um: float
    region_min_area_um2: float
    heatmap_rgba: bool


def display_range(values: np.ndarray, on_tissue: np.ndarray, scale: str) -> tuple[float, float]:
    """(low, high) of the overlay's colours: (0, 1), or (0, the NN-th percentile on tissue)."""
    if scale == "fixed" or not on_tissue.any():
        return 0.0, 1.0
    high = float(np.percentile(values[on_tissue], float(scale[1:])))
    return (0.0, high) if high > 0 else (0.0, 1.0)


def region_downsample(shape: tuple[int, int]) -> int:
    """Map pixels per pixel of the region grid (its longer side at most ``REGION_MAX_SIDE``)."""
    return max(1, math.ceil(max(shape) / REGION_MAX_SIDE))


def write_outputs(folder: Path, stem: str, values: np.ndarray, display: np.ndarray,
                  thumb: np.ndarray, tissue: TissueMask, thumb_ds: int, map_level0: float,
                  level0_mpp: float, dimensions: tuple[int, int], info: MapInfo, scratch: Path,
                  description: dict) -> dict:
    """Write the files of the module docstring from ``values`` (the map, 0 off the tissue) and
    ``display`` (the map before that, on the region grid: the overlay, drawn on the thumbnail's
    finer tissue mask, is not darkened at the tissue's edge); returns their summary."""
    files = {"map": f"{stem}.map.npy", "heatmap": f"{stem}.heatmap.tif"}
    page_mpp = level0_mpp
    write_heatmap(values, folder / files["heatmap"], downsample=map_level0, mpp=page_mpp,
                  scratch=scratch, description=description)
    if info.heatmap_rgba:
        files["heatmap_rgba"] = f"{stem}.heatmap-rgba.tif"
        write_heatmap_rgba(values, folder / files["heatmap_rgba"], downsample=map_level0,
                           mpp=page_mpp, scratch=scratch, description=description)
    files.update(thumbnail=f"{stem}.thumbnail.png", tissue=f"{stem}.tissue.png",
                 tissue_geojson=f"{stem}.tissue.geojson", overlay=f"{stem}.overlay.png")
    save_png(thumb, folder / files["thumbnail"])
    save_png(tissue.mask.astype(np.uint8) * 255, folder / files["tissue"])
    write_geojson(region_features(tissue.mask, None, name="Tissue", color=TISSUE_COLOR,
                                  scale=thumb_ds, bounds=dimensions, smooth=True, mpp=level0_mpp),
                  folder / files["tissue_geojson"])
    region_ds = region_downsample(values.shape)
    coarse = block_mean(values, region_ds)
    coarse_level0 = map_level0 * region_ds
    coarse_tissue = resample_mask(tissue.mask, thumb_ds, coarse.shape, coarse_level0)
    low, high = display_range(coarse, coarse_tissue, info.overlay_scale)
    heat = np.clip((resample_values(display, coarse_level0, thumb.shape[:2], thumb_ds) - low)
                   / (high - low), 0.0, 1.0)
    picture = np.where(tissue.mask[..., None], overlay(thumb, heat, lut=colormap_lut()), thumb)
    scaling = "fixed" if info.overlay_scale == "fixed" else \
        f"0 to the {info.overlay_scale[1:]}th percentile on tissue"
    save_png(add_legend(picture, title=f"{info.title} ({scaling}; opacity grows with the value)",
                        value_range=(low, high), um_per_px=level0_mpp * thumb_ds),
             folder / files["overlay"])
    tissue_pixels = int(coarse_tissue.sum())
    summary: dict = {"files": files, "region": None, "area_fraction": None}
    if not info.regions:
        summary["region"] = "not written: --no-regions"
    elif info.threshold is None:
        summary["region"] = f"not written: {info.threshold_source}"
    else:
        coarse_mpp = level0_mpp * coarse_level0
        region = region_mask(coarse, info.threshold, coarse_tissue, coarse_mpp,
                             smooth_um=info.region_smooth_um,
                             min_area_um2=info.region_min_area_um2)
        collection = region_features(region, coarse, name=info.region_name, color=REGION_COLOR,
                                     scale=coarse_level0, bounds=dimensions, smooth=True,
                                     mpp=level0_mpp)
        files.update(region=f"{stem}.region.png", region_geojson=f"{stem}.region.geojson")
        write_geojson(collection, folder / files["region_geojson"])
        save_png(region.astype(np.uint8) * 255, folder / files["region"])
        area = float(region.sum()) * coarse_mpp ** 2
        summary["region"] = {"polygons": len(collection["features"]), "area_mm2": area / 1e6,
                             "threshold": info.threshold, "threshold_source": info.threshold_source,
                             "png_level0_downsample": coarse_level0,
                             "smooth_um": info.region_smooth_um,
                             "min_area_um2": info.region_min_area_um2}
        summary["area_fraction"] = float(region.sum()) / tissue_pixels if tissue_pixels else 0.0
    return summary
