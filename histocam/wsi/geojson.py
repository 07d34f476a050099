"""Binary masks -> QuPath-importable GeoJSON: polygons on the pixel edges (or chamfered), holes kept.

Each 4-connected component of the mask becomes one ``Polygon`` whose rings run along pixel
boundaries (pixel (r, c) is the square [c, c+1] × [r, r+1]), so the polygon covers exactly the
component's pixels. Boundary edges are walked with the foreground on the right (y down); at a
vertex where two components touch diagonally the walk turns right, which keeps it on one
component. Outer rings then have positive shoelace area (counter-clockwise in a y-up frame, as
RFC 7946 asks) and holes negative. Coordinates are multiplied by ``scale`` (level-0 pixels per mask
pixel) and shifted by ``origin``: QuPath reads them as level-0 pixel coordinates
(File › Import objects). Each feature carries ``objectType``, ``classification`` {name, color} and
``measurements`` (an object of name: value: its area, the mean probability of its pixels).
``chamfer`` cuts the staircase corners of a traced ring (``smooth=True``: regions and tissue
contours); ``square_feature`` makes one tile a detection.

Used by ``histocam predict`` (tissue contours, regions, tile detections) and by the synthetic
slides' tumour annotations (``synth_slide.py``); read back by ``annotations.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

# direction codes: 0 = +x, 1 = +y, 2 = -x, 3 = -y; a right turn (y down) is code + 1
_STEP = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])


def _boundary_edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start x, start y, direction code) of every foreground/background pixel edge, and the
    pixel (row, col) each edge belongs to."""
    m = np.pad(mask.astype(bool), 1)
    fg = m[1:-1, 1:-1]
    sides = [(m[:-2, 1:-1], 0, (0, 0)),   # background above: top edge, +x from (c, r)
             (m[1:-1, 2:], 1, (1, 0)),    # background right: right edge, +y from (c+1, r)
             (m[2:, 1:-1], 2, (1, 1)),    # background below: bottom edge, -x from (c+1, r+1)
             (m[1:-1, :-2], 3, (0, 1))]   # background left: left edge, -y from (c, r+1)
    xs, ys, codes, pixels = [], [], [], []
    for neighbour, code, (dx, dy) in sides:
        r, c = np.nonzero(fg & ~neighbour)
        xs.append(c + dx)
        ys.append(r + dy)
        codes.append(np.full(r.shape, code))
        pixels.append(np.stack([r, c], axis=1))
    return (np.stack([np.concatenate(xs), np.concatenate(ys)], axis=1).astype(np.int64),
            np.concatenate(codes).astype(np.int64), np.concatenate(pixels))


def mask_rings(mask: np.ndarray) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """Every boundary ring of ``mask`` as (K×2 vertex array x, y without repeating the first,
    only the corners, a pixel of its component (row, col))."""
    start, code, pixel = _boundary_edges(mask)
    n = len(code)
    if n == 0:
        return []
    width = mask.shape[1] + 1
    end = start + _STEP[code]
    key = (start[:, 1] * width + start[:, 0]) * 4 + code
    order = np.argsort(key)
    sorted_keys = key[order]

    def find(vertex_key: np.ndarray) -> np.ndarray:
        i = np.searchsorted(sorted_keys, vertex_key).clip(0, n - 1)
        return np.where(sorted_keys[i] == vertex_key, order[i], -1)

    end_vertex = (end[:, 1] * width + end[:, 0]) * 4
    nxt = np.full(n, -1)
    for turn in (1, 0, 3):  # right turn first (saddles), then straight, then left
        cand = find(end_vertex + (code + turn) % 4)
        nxt = np.where((nxt < 0) & (cand >= 0), cand, nxt)
    if bool((nxt < 0).any()):
        raise AssertionError("open boundary: the edge walk is inconsistent")
    seen = np.zeros(n, bool)
    rings = []
    nxt_list, code_list = nxt.tolist(), code.tolist()
    for first in range(n):
        if seen[first]:
            continue
        corners = []
        e = first
        while not seen[e]:
            seen[e] = True
            following = nxt_list[e]
            if code_list[following] != code_list[e]:  # a corner at the end of edge e
                corners.append(end[e])
            e = following
        owner = (int(pixel[first, 0]), int(pixel[first, 1]))
        rings += [(loop, owner) for loop in split_pinches(np.array(corners))]
    return rings


def split_pinches(ring: np.ndarray) -> list[np.ndarray]:
    """A ring that passes a vertex twice split there into simple rings.

    The walk passes a vertex twice where two pixels of one component touch only at that corner
    and the component closes around a pocket of background; such a ring touches itself, which the
    OGC simple-features rules (and shapely) reject. Split at the vertex, the component's boundary
    becomes its outer ring plus holes that touch it at one point, which they allow."""
    loops: list[np.ndarray] = []
    path: list[tuple[int, int]] = []
    where: dict[tuple[int, int], int] = {}
    for vertex in map(tuple, ring.tolist()):
        if vertex in where:
            i = where[vertex]
            loops.append(np.array(path[i:]))
            for v in path[i + 1:]:
                del where[v]
            del path[i + 1:]
        else:
            where[vertex] = len(path)
            path.append(vertex)
    loops.append(np.array(path))
    return loops


def signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0].astype(float), ring[:, 1].astype(float)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def mask_polygons(mask: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """(one entry per 4-connected component: ``outer`` ring, ``holes``, ``label``; the component
    labels image of ``scipy.ndimage.label``)."""
    labels, count = ndimage.label(mask)
    polygons = {k: {"outer": None, "holes": [], "label": k} for k in range(1, count + 1)}
    for ring, (r, c) in mask_rings(mask):
        owner = polygons[int(labels[r, c])]
        if signed_area(ring) > 0:
            if owner["outer"] is not None:
                raise AssertionError("two outer rings for one 4-connected component")
            owner["outer"] = ring
        else:
            owner["holes"].append(ring)
    return [polygons[k] for k in sorted(polygons)], labels


def chamfer(ring: np.ndarray) -> np.ndarray:
    """A traced ring (corners on the pixel grid) with every corner cut half a pixel along its two
    edges, then its collinear vertices dropped: a staircase of single pixels becomes a straight
    diagonal. Each cut triangle lies in the quarter of the corner's own pixel, so cuts of different
    corners never meet and a simple ring stays simple; rings that touched at a corner come apart."""
    doubled = 2 * np.asarray(ring, np.int64)  # half-pixel points are integers: exact arithmetic
    prev_dir = np.sign(doubled - np.roll(doubled, 1, axis=0))
    next_dir = np.sign(np.roll(doubled, -1, axis=0) - doubled)
    cut = np.stack([doubled - prev_dir, doubled + next_dir], axis=1).reshape(-1, 2)
    keep = np.any(cut != np.roll(cut, 1, axis=0), axis=1)  # cuts meeting mid-edge (length 1)
    cut = cut[keep]
    a, b = np.roll(cut, 1, axis=0) - cut, np.roll(cut, -1, axis=0) - cut
    turning = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0] != 0
    return cut[turning] / 2.0


def _level0(ring: np.ndarray, scale: float, origin: tuple[float, float],
            bounds: tuple[float, float] | None) -> np.ndarray:
    pts = ring * scale + np.asarray(origin, dtype=float)
    return pts if bounds is None else np.minimum(pts, np.asarray(bounds, dtype=float))


def _closed(pts: np.ndarray) -> list[list[float]]:
    out = [[round(float(x), 3), round(float(y), 3)] for x, y in pts]
    return out + [out[0]]


def classification(name: str, color: tuple[int, int, int]) -> dict:
    """QuPath's ``classification`` of a feature: its class name and RGB colour."""
    return {"name": name, "color": [int(v) for v in color]}


def region_features(mask: np.ndarray, probability: np.ndarray | None, *, name: str,
                    color: tuple[int, int, int], scale: float = 1.0,
                    origin: tuple[float, float] = (0.0, 0.0),
                    bounds: tuple[float, float] | None = None, smooth: bool = False,
                    mpp: float | None = None) -> dict:
    """A GeoJSON FeatureCollection of the components of ``mask`` (module docstring); the mean of
    ``probability`` (same shape as the mask) over each component is its ``mean probability``.
    ``bounds`` (width, height): coordinates are clipped to the slide (the last map pixels of a
    slide whose size is no multiple of the map's downsample reach past its edge). ``smooth``: the
    rings are chamfered (``chamfer``) instead of following the pixel edges. ``mpp``: level-0
    microns per pixel, for the area in µm²."""
    polygons, labels = mask_polygons(mask)
    means = (ndimage.mean(probability.astype(np.float64), labels, [p["label"] for p in polygons])
             if probability is not None and polygons else [None] * len(polygons))
    features = []
    for i, (poly, mean) in enumerate(zip(polygons, means), start=1):
        rings = [chamfer(r) if smooth else r for r in [poly["outer"], *poly["holes"]]]
        rings = [_level0(r, scale, origin, bounds) for r in rings]
        area = sum(signed_area(r) for r in rings)  # holes count negative
        measurements = {"area (level-0 px^2)": float(area)}
        if mpp is not None:
            measurements["area (µm^2)"] = float(area) * mpp * mpp
        if mean is not None:
            measurements["mean probability"] = float(mean)
        features.append({
            "type": "Feature", "id": f"{name}-{i}",
            "geometry": {"type": "Polygon", "coordinates": [_closed(r) for r in rings]},
            "properties": {"objectType": "annotation", "name": f"{name} {i}",
                           "classification": classification(name, color),
                           "isLocked": False, "measurements": measurements},
        })
    return {"type": "FeatureCollection", "features": features}


def square_feature(ident: str, x: float, y: float, size: float, *, name: str,
                   color: tuple[int, int, int], measurements: dict[str, float],
                   object_type: str = "detection") -> dict:
    """A square Feature (level-0 x, y of its top-left corner, side ``size``), e.g. one tile as a
    QuPath detection whose measurements the measurement maps colour."""
    ring = np.array([[x, y], [x, y + size], [x + size, y + size], [x + size, y]], float)
    return {"type": "Feature", "id": ident,
            "geometry": {"type": "Polygon", "coordinates": [_closed(ring)]},
            "properties": {"objectType": object_type, "classification": classification(name, color),
                           "isLocked": False, "measurements": measurements}}


def write_geojson(collection: dict, path: Path) -> Path:
    """``collection`` as a GeoJSON file (written under a temporary name, then renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(collection))
    tmp.replace(path)
    return path
