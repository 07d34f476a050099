"""The tiles of a slide as a torch dataset, read in DataLoader workers.

Each item is (tile index, 3×E×E float RGB in [0, 1], error): the tile read from the pyramid level
nearest to the model's input size E that is not coarser (``SlideReader.read_tile``: a 512-pixel
level-0 tile for a 224-pixel input comes from level 0 of a 1/4/16 pyramid, from a level of downsample
2 where there is one) and resized once to E (bilinear with antialiasing, as evaluation resizes
images: ``histocam.data.transforms.model_input``). A read error
is returned as text (with a blank image) rather than raised: a DataLoader worker's exception would
reach the main process as a traceback, the text reaches it as data and becomes one error line that
names the slide. Each worker opens the slide itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from histocam.data.errors import DataError
from histocam.data.transforms import model_input
from histocam.wsi.grid import TileGrid
from histocam.wsi.reader import SlideReader


class TileDataset(torch.utils.data.Dataset):
    """Tiles ``indices`` of ``grid`` on the slide at ``path`` (module docstring)."""

    def __init__(self, path: Path, backend: str, grid: TileGrid, indices: np.ndarray,
                 eval_size: int, stain_normalize: str = "none") -> None:
        self.path, self.backend, self.grid = Path(path), backend, grid
        self.indices = np.asarray(indices, np.int64)
        self.eval_size, self.stain_normalize = eval_size, stain_normalize
        self._reader: SlideReader | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        index = int(self.indices[i])
        try:
            if self._reader is None:
                self._reader = SlideReader(self.path, self.backend)
            x, y = (int(round(float(v) * self.grid.scale)) for v in self.grid.positions[index])
            rgb = self._reader.read_tile(x, y, self.grid.extent, self.eval_size)
        except DataError as exc:
            return index, torch.zeros(3, self.eval_size, self.eval_size), str(exc)
        return index, model_input(rgb, self.eval_size, self.stain_normalize), ""
