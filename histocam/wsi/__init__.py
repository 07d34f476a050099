"""Whole slides, independently of any model: reading, tissue, tiling, blending, files.

``backends.py`` (OpenSlide and tiffslide behind one interface, bad files as one error) →
``reader.py`` (``SlideReader``: regions at any level, thumbnails) → ``scale.py`` (microns per pixel
of a slide, magnifications) → ``tissue.py`` (stain-independent tissue detection; ``morphology.py``)
→ ``grid.py`` (the tissue tiles at the tile scale) → ``tiles.py`` (tiles as a torch dataset) →
``work.py`` (a slide's partial results, for resuming) → ``stitch.py`` (overlap blending without
seams) → ``pyramid.py`` (tiled pyramidal TIFF) and ``geojson.py`` (QuPath GeoJSON). Also
``annotations.py`` (GeoJSON and ASAP XML regions, rasterised), ``patches.py`` (a WSOL patch benchmark
cut from annotated slides: ``histocam data patches``) and ``synth_slide.py`` (a synthetic slide with
known tissue and tumour: ``histocam data synth-slide``).
"""

from histocam.wsi.backends import SlideError
from histocam.wsi.grid import TileGrid, tile_grid
from histocam.wsi.reader import SlideReader
from histocam.wsi.stitch import Stitcher, ramp_window, tile_window
from histocam.wsi.tissue import TissueMask, TissueOptions, detect_tissue

__all__ = ["SlideError", "SlideReader", "Stitcher", "TileGrid", "TissueMask", "TissueOptions",
           "detect_tissue", "ramp_window", "tile_grid", "tile_window"]
