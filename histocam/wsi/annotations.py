"""Slide region annotations: QuPath GeoJSON and ASAP/CAMELYON16 XML, in level-0 pixel coordinates,
rasterised into exact pixel masks of any level-0 window.

Formats:

- GeoJSON (QuPath File › Export objects, and ``histocam data synth-slide``): a FeatureCollection, a
  bare list of Features, or one Feature; ``Polygon`` and ``MultiPolygon`` geometries (other
  geometries, e.g. points, are not regions and are skipped). The class is
  ``properties.classification.name`` (QuPath), else ``properties.name``.
- ASAP XML (CAMELYON16): ``<Annotation Type="Polygon" PartOfGroup="...">`` with
  ``<Coordinate Order X Y>``; the class is the group. CAMELYON16 groups ``_0`` and ``_1`` are
  tumour, ``_2`` are normal islands inside tumour (exclusions).

A feature is a region made of its rings: a pixel is inside when the even–odd rule over all its rings
(outer rings and holes alike) says so. A feature whose class is in ``exclude`` is an exclusion.
The mask of a window is the union of the regions minus the union of the exclusions.

Rasterisation: pixel (r, c) is the square [c, c+1] × [r, r+1]; it is inside a ring when its centre
(c + ½, r + ½) is (scan lines through the pixel centres, crossings counted half-open in y, a centre
exactly on an edge counts as outside its right-hand side). A polygon whose vertices lie on pixel
corners, as those ``geojson.py`` traces, is rasterised back to exactly the pixels it was traced from.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histocam.data.errors import DataError

ANNOTATION_SUFFIXES = (".geojson", ".json", ".xml")
DEFAULT_EXCLUDE = ("_2", "Exclusion")


@dataclass
class Region:
    """One annotated region: its rings (K×2 float arrays of level-0 x, y), class name, and whether
    it is an exclusion."""

    rings: list[np.ndarray]
    name: str
    exclude: bool

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x min, y min, x max, y max)."""
        pts = np.concatenate(self.rings)
        return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()),
                float(pts[:, 1].max()))


def _ring(path: Path, coords, where: str) -> np.ndarray:
    try:
        ring = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(path, f"{where}: coordinates are not numbers") from None
    if ring.ndim != 2 or ring.shape[1] < 2 or len(ring) < 3:
        raise DataError(path, f"{where}: a ring needs at least 3 [x, y] points, got shape "
                        f"{ring.shape}")
    if not np.isfinite(ring).all():
        raise DataError(path, f"{where}: non-finite coordinates")
    return ring[:, :2]


def _feature_name(feature: dict) -> str:
    props = feature.get("properties") or {}
    cls = props.get("classification")
    if isinstance(cls, dict) and cls.get("name"):
        return str(cls["name"])
    if isinstance(cls, str) and cls:
        return cls
    return str(props.get("name") or "")


def read_geojson(path: Path, exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> list[Region]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not a readable GeoJSON file ({exc})") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    else:
        features = data
    if not isinstance(features, list):
        raise DataError(path, "expected a GeoJSON FeatureCollection, a Feature or a list of Features")
    regions = []
    for i, feature in enumerate(features):
        if not isinstance(feature, dict) or not isinstance(feature.get("geometry"), dict):
            raise DataError(path, f"feature {i}: not a GeoJSON Feature with a geometry")
        geometry = feature["geometry"]
        kind, coords = geometry.get("type"), geometry.get("coordinates")
        if kind == "Polygon":
            polygons = [coords]
        elif kind == "MultiPolygon":
            polygons = coords
        else:
            continue
        name = _feature_name(feature)
        if not isinstance(polygons, list):
            raise DataError(path, f"feature {i}: {kind} coordinates are not a list")
        for polygon in polygons:
            if not isinstance(polygon, list) or not polygon:
                raise DataError(path, f"feature {i}: a polygon without rings")
            rings = [_ring(path, r, f"feature {i}") for r in polygon]
            regions.append(Region(rings, name, name in exclude))
    return regions


def read_asap_xml(path: Path, exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> list[Region]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DataError(path, f"not a readable ASAP XML file ({exc})") from None
    annotations = root.findall(".//Annotation")
    if root.tag != "ASAP_Annotations" and not annotations:
        raise DataError(path, "expected an ASAP_Annotations document with <Annotation> elements")
    regions = []
    for i, annotation in enumerate(annotations):
        if annotation.get("Type", "Polygon") not in ("Polygon", "Spline", "Rectangle"):
            continue
        points = []
        for c in annotation.iter("Coordinate"):
            try:
                points.append((int(c.get("Order", len(points))), float(c.get("X")),
                               float(c.get("Y"))))
            except (TypeError, ValueError):
                raise DataError(path, f"annotation {i} ({annotation.get('Name')}): a Coordinate "
                                "without numeric X and Y") from None
        points.sort(key=lambda p: p[0])
        ring = _ring(path, [p[1:] for p in points], f"annotation {i} ({annotation.get('Name')})")
        group = annotation.get("PartOfGroup") or ""
        regions.append(Region([ring], group, group in exclude))
    return regions


def read_annotations(path: str | Path, exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> list[Region]:
    """The regions of a GeoJSON (``.geojson``/``.json``) or ASAP XML (``.xml``) file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "annotation file not found")
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        return read_geojson(path, exclude)
    if suffix == ".xml":
        return read_asap_xml(path, exclude)
    raise DataError(path, f"unknown annotation format {suffix!r}: expected "
                    f"{', '.join(ANNOTATION_SUFFIXES)}")


def rasterize_rings(rings: list[np.ndarray], x0: float, y0: float, width: int,
                    height: int) -> np.ndarray:
    """height×width bool: pixels of the level-0 window at (x0, y0) whose centres are inside the
    rings by the even–odd rule (module docstring)."""
    inside = np.zeros((height, width + 1), np.int32)
    centres_y = y0 + np.arange(height) + 0.5
    for ring in rings:
        a = ring
        b = np.roll(ring, -1, axis=0)
        ya, yb = a[:, 1][None, :], b[:, 1][None, :]
        yc = centres_y[:, None]
        crosses = (ya <= yc) != (yb <= yc)  # half-open: horizontal edges never cross
        rows, edges = np.nonzero(crosses)
        if rows.size == 0:
            continue
        t = (centres_y[rows] - a[edges, 1]) / (b[edges, 1] - a[edges, 1])
        x = a[edges, 0] + t * (b[edges, 0] - a[edges, 0])
        # the crossing toggles every pixel whose centre x0 + c + ½ lies strictly right of it
        first = np.clip(np.floor(x - x0 - 0.5).astype(np.int64) + 1, 0, width)
        np.add.at(inside, (rows, first), 1)
    return (np.cumsum(inside, axis=1)[:, :width] % 2).astype(bool)


def regions_mask(regions: list[Region], x0: float, y0: float, width: int, height: int) -> np.ndarray:
    """height×width bool mask of the level-0 window at (x0, y0): regions minus exclusions."""
    keep = np.zeros((height, width), bool)
    drop = np.zeros((height, width), bool)
    for region in regions:
        xmin, ymin, xmax, ymax = region.bounds
        if xmax < x0 or ymax < y0 or xmin > x0 + width or ymin > y0 + height:
            continue
        target = drop if region.exclude else keep
        target |= rasterize_rings(region.rings, x0, y0, width, height)
    return keep & ~drop
