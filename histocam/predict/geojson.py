"""Binary region -> QuPath-importable GeoJSON, for the slide regions at τ*.

The tracing (polygons on the pixel edges, holes kept, level-0 coordinates) is the data layer's
``histocam.data.geojson``, shared with the synthetic slides' tumour annotations
(``histocam data synth-slide``); this module names it for the predict layer.
"""

from histocam.data.geojson import mask_polygons, mask_rings, region_features, signed_area, write_geojson

__all__ = ["mask_polygons", "mask_rings", "region_features", "signed_area", "write_geojson"]
