"""The tiles of a predicted slide, one row and one QuPath detection each, written as they come.

``STEM.tiles.csv``: tile index, level-0 x, y, width, height, tissue fraction, map class and the class
probabilities. ``STEM.tiles.geojson``: one ``detection`` per tile over the tile's own cell of the
grid (the stride × stride square at the tile's centre, so that cells do not overlap), classified as
its most probable class, with the class probabilities and the tissue fraction as ``measurements``:
QuPath's *Measure › Show measurement maps* colours the tiles by any of them. Both files are written
row by row, under temporary names renamed at the end.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from histocam.wsi.geojson import square_feature
from histocam.wsi.grid import TileGrid

PALETTE = [(0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0),
           (86, 180, 233), (240, 228, 66), (0, 0, 0)]  # Okabe–Ito, colour-blind safe


class TileWriter:
    """Context manager: ``add`` one tile at a time (module docstring)."""

    def __init__(self, folder: Path, stem: str, grid: TileGrid, class_names: list[str]) -> None:
        self.grid, self.names = grid, class_names
        self.csv_path = folder / f"{stem}.tiles.csv"
        self.geojson_path = folder / f"{stem}.tiles.geojson"
        self.count = 0

    def __enter__(self) -> TileWriter:
        self._csv_tmp = self.csv_path.with_name(f".{self.csv_path.name}.tmp")
        self._geo_tmp = self.geojson_path.with_name(f".{self.geojson_path.name}.tmp")
        self._csv_file = self._csv_tmp.open("w", newline="")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(["tile", "x", "y", "width", "height", "tissue", "map_class",
                            *[f"p_{c}" for c in self.names]])
        self._geo = self._geo_tmp.open("w")
        self._geo.write('{"type": "FeatureCollection", "features": [')
        return self

    def add(self, index: int, probs: np.ndarray, cls: int) -> None:
        g = self.grid
        x, y, size = g.level0(index)
        tissue = float(g.tissue[index])
        self._csv.writerow([index, x, y, size, size, f"{tissue:.4f}", self.names[cls],
                            *[f"{float(p):.6f}" for p in probs]])
        stride = (g.tile - g.overlap) * g.scale
        margin = g.overlap * g.scale / 2
        best = int(np.argmax(probs))
        measurements = {f"P({c})": round(float(p), 6) for c, p in zip(self.names, probs)}
        measurements["tissue fraction"] = round(tissue, 4)
        feature = square_feature(f"tile-{index}", x + margin, y + margin, stride,
                                 name=self.names[best], color=PALETTE[best % len(PALETTE)],
                                 measurements=measurements)
        self._geo.write(("," if self.count else "") + "\n" + json.dumps(feature))
        self.count += 1

    def __exit__(self, kind, value, traceback) -> None:
        self._csv_file.close()
        self._geo.write("\n]}\n")
        self._geo.close()
        if kind is None:
            self._csv_tmp.replace(self.csv_path)
            self._geo_tmp.replace(self.geojson_path)
        else:
            self._csv_tmp.unlink(missing_ok=True)
            self._geo_tmp.unlink(missing_ok=True)
