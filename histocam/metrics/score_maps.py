"""Score maps saved by any tool (like wsolevaluation's standalone evaluator).

MAPS_DIR holds one map per image: ``<id>.npy`` (a 2-D float array in [0, 1]: float16, float32 or
float64) or the files ``histocam predict`` writes, ``<id>.map.npy`` (float16) and ``<id>.map.png``
(8-bit, round(255·p); used only where no ``.npy`` of the id exists). The other files predict writes
beside its maps (overlays, regions, summaries, ``predictions.csv``) are passed over, so a predict
output folder is a maps folder. MASKS_DIR holds one ``<id>.png`` (or ``.bmp``, ``.tif``) mask per
image (0 = background, > 0 = foreground); a missing mask file means all background. Evaluation
follows docs/protocol.md, "Metrics" at ``size``×``size`` (maps bilinear, ``align_corners=False``;
masks nearest), or at each mask's native size with ``native=True``. Every invalid, unmatched or
ambiguous file (two maps or two masks for one id) is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from histocam.core.progress import track
from histocam.core.results import Localization
from histocam.data.errors import DataError
from histocam.data.io import read_mask, read_mask_values
from histocam.data.transforms import resize_maps, resize_mask
from histocam.metrics.histogram import PixelHistogram
from histocam.metrics.localization import localization_report
from histocam.metrics.per_image import PerImageScores
from histocam.metrics.protocol import Batch
from histocam.metrics.validation import MapError, validate_maps

MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
#: Map files by the ending after the id, most precise first: where one id has several, the first.
MAP_ENDINGS = (".map.npy", ".npy", ".map.png")
#: What ``histocam predict`` writes beside its maps (per image or slide, and once per call).
PREDICT_EXTRAS = (".overlay.png", ".region.png", ".region.geojson", ".heatmap.tif", ".tiles.csv",
                  ".json", ".work")


def _resize_map(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    # bilinear of values in [0, 1] stays in [0, 1] up to rounding
    return resize_maps(m, hw).clamp(0.0, 1.0)


def _map_id(path: Path) -> tuple[str, int] | None:
    """(id, rank of its ending in ``MAP_ENDINGS``) of a map file; None for any other file."""
    for rank, ending in enumerate(MAP_ENDINGS):
        if path.name.endswith(ending) and len(path.name) > len(ending):
            return path.name[:-len(ending)], rank
    return None


def _is_predict_extra(path: Path) -> bool:
    """A file of ``histocam predict`` that is not a map: per-image extras, the calls' tables
    (``predictions*.csv``, ``summary*.csv``) and the folder of its slides."""
    return path.name.endswith(PREDICT_EXTRAS) or (
        path.name.startswith(("predictions", "summary")) and path.suffix == ".csv") or (
        path.name == "slides" and path.is_dir())


def _find_maps(maps_dir: Path) -> dict[str, Path]:
    found: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted(maps_dir.iterdir()):
        key = _map_id(path)
        if key is None:
            if _is_predict_extra(path):
                continue
            raise DataError(path, "unexpected file in the maps folder (expected <id>.npy, or the "
                            "<id>.map.npy / <id>.map.png files of histocam predict)")
        found.setdefault(key[0], []).append((key[1], path))
    maps = {}
    for image_id, files in found.items():
        files.sort()
        if len(files) > 1 and files[1][0] < MAP_ENDINGS.index(".map.png"):  # two float maps
            raise DataError(files[1][1], f"a second map of id {image_id!r} (the first: "
                            f"{files[0][1]}); keep one")
        maps[image_id] = files[0][1]
    return maps


def pair_files(maps_dir: Path, masks_dir: Path) -> list[tuple[str, Path, Path | None]]:
    """(id, map file, mask file or None) for every map; errors on stray, unmatched or ambiguous
    files."""
    if not maps_dir.is_dir():
        raise DataError(maps_dir, "maps folder not found")
    if not masks_dir.is_dir():
        raise DataError(masks_dir, "masks folder not found")
    maps = _find_maps(maps_dir)
    masks: dict[str, Path] = {}
    for path in sorted(masks_dir.iterdir()):
        if path.suffix.lower() not in MASK_SUFFIXES:
            raise DataError(path, f"unexpected file in the masks folder (expected {MASK_SUFFIXES})")
        if path.stem not in maps:
            raise DataError(path, f"mask has no map {path.stem}.npy in {maps_dir}")
        if path.stem in masks:
            raise DataError(path, f"a second mask of id {path.stem!r} (the first: "
                            f"{masks[path.stem]}); keep one")
        masks[path.stem] = path
    if not maps:
        raise DataError(maps_dir, "no maps found (<id>.npy or <id>.map.npy / <id>.map.png)")
    return [(i, maps[i], masks.get(i)) for i in sorted(maps)]


def load_map(path: Path) -> torch.Tensor:
    """A map file as an H×W float tensor in [0, 1] (float16 maps widened to float32)."""
    if path.suffix == ".png":
        array = read_mask_values(path)
        if array.ndim != 2 or array.dtype != np.uint8:
            raise DataError(path, f"an 8-bit map must be a 2-D uint8 image, got {array.dtype} "
                            f"{array.shape}")
        array = array.astype(np.float32) / 255.0
    else:
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(path, f"unreadable .npy map ({exc})") from exc
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
            raise DataError(path, f"map must be a 2-D float array, got {array.dtype} "
                            f"{array.shape}")
        if array.dtype not in (np.float32, np.float64):
            array = array.astype(np.float32)
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
