"""Score maps saved by any tool (like wsolevaluation's standalone evaluator).

MAPS_DIR holds one ``<id>.npy`` 2-D float map in [0, 1] per image; MASKS_DIR one ``<id>.png`` mask
(0 = background, > 0 = foreground); a missing mask file means all background. Evaluation follows
docs/protocol.md, "Metrics" at ``size``×``size`` (maps bilinear, ``align_corners=False``; masks
nearest), or at each mask's native size with ``native=True``. Every invalid or unmatched file is an
error naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from histocam.core.progress import track
from histocam.core.results import Localization
from histocam.data.errors import DataError
from histocam.data.io import read_mask
from histocam.data.transforms import resize_maps, resize_mask
from histocam.metrics.histogram import PixelHistogram
from histocam.metrics.localization import localization_report
from histocam.metrics.per_image import PerImageScores
from histocam.metrics.protocol import Batch
from histocam.metrics.validation import MapError, validate_maps

MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


def _resize_map(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    # bilinear of values in [0, 1] stays in [0, 1] up to rounding
    return resize_maps(m, hw).clamp(0.0, 1.0)


def pair_files(maps_dir: Path, masks_dir: Path) -> list[tuple[str, Path, Path | None]]:
    """(id, map file, mask file or None) for every map; errors on stray or unmatched files."""
    if not maps_dir.is_dir():
        raise DataError(maps_dir, "maps folder not found")
    if not masks_dir.is_dir():
        raise DataError(masks_dir, "masks folder not found")
    maps = {}
    for path in sorted(maps_dir.iterdir()):
        if path.suffix != ".npy":
            raise DataError(path, "unexpected file in the maps folder (expected <id>.npy)")
        maps[path.stem] = path
    masks = {}
    for path in sorted(masks_dir.iterdir()):
        if path.suffix.lower() not in MASK_SUFFIXES:
            raise DataError(path, f"unexpected file in the masks folder (expected {MASK_SUFFIXES})")
        if path.stem not in maps:
            raise DataError(path, f"mask has no map {path.stem}.npy in {maps_dir}")
        masks[path.stem] = path
    if not maps:
        raise DataError(maps_dir, "no .npy maps found")
    return [(i, maps[i], masks.get(i)) for i in sorted(maps)]


def load_map(path: Path) -> torch.Tensor:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(path, f"unreadable .npy map ({exc})") from exc
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise DataError(path, f"map must be a 2-D float array, got {array.dtype} {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    try:
        validate_maps(tensor[None], ids=[path.name])
    except MapError as exc:
        raise DataError(path, str(exc)) from exc
    return tensor


def accumulate(maps_dir: Path, masks_dir: Path, size: int | None, per_image: PerImageScores | None
               ) -> PixelHistogram:
    hist = PixelHistogram()
    pairs = pair_files(Path(maps_dir), Path(masks_dir))
    for image_id, map_path, mask_path in track(pairs, f"scoring {maps_dir}", unit="maps"):
        m = load_map(map_path)
        if mask_path is None:
            mask = torch.zeros(m.shape if size is None else (size, size))
        else:
            mask = torch.from_numpy(read_mask(mask_path)).float()
        if size is not None:
            m, mask = _resize_map(m, (size, size)), resize_mask(mask, size)
        else:
            m = _resize_map(m, tuple(mask.shape))
        maps, masks = m[None], mask[None] > 0.5
        batch = Batch(ids=[image_id], maps=maps, masks=masks)
        hist.update(batch)
        if per_image is not None:
            per_image.update(batch)
    return hist


def score_map_dirs(maps_dir: Path, masks_dir: Path, valpx_maps: Path | None = None,
                   valpx_masks: Path | None = None, size: int | None = 224) -> Localization:
    """The localisation metrics of the maps; τ* from the valpx pair when given."""
    valpx = None
    if (valpx_maps is None) != (valpx_masks is None):
        raise DataError(valpx_maps or valpx_masks, "give both --valpx-maps and --valpx-masks")
    if valpx_maps is not None:
        valpx = accumulate(valpx_maps, valpx_masks, size, None)
    test = accumulate(maps_dir, masks_dir, size, None)
    return localization_report(test, valpx, evaluated_at=f"{size}x{size}" if size
                               else "native mask resolution")
