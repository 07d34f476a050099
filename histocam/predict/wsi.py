"""Prediction on one whole slide: tissue tiles -> batched inference -> stitched map -> exports.

Steps: tissue detection on a thumbnail (``tissue.py``) -> the grid of tissue tiles
(``slides.TileGrid``) -> tiles read in DataLoader workers and inferred in batches -> each tile's map
reduced to its footprint on the map grid (area mean) and stored with its probabilities, one file
per batch, in ``STEM.work/`` -> overlap blending in tile order (``stitch.py``) -> exports.

Tile maps: the method's map of the map class (``Predictor``). Methods that min–max normalise
their maps per input give every tile the range [0, 1], also tiles without any foreground; with
``weight_by_probability`` (the default for slides) each tile's map is multiplied by the tile's
probability of the map's class, so that a tile the classifier calls negative stays low. The
overlay and the region at τ* (PNG, GeoJSON) are restricted to the detected tissue (a tile that
reaches onto the glass maps it too); ``STEM.map.npy`` and the heatmap TIFF keep the stitched map.

Slide-level prediction (``STEM.json``, ``aggregation``): when the run's data has a fully negative
class and two classes (multiple-instance assumption: a slide is positive when any part is), the
positive probability of the slide is the largest tile probability (``max``); otherwise the class
probabilities are the tissue-weighted mean of the tiles' (``mean``). The predicted class is the
argmax.

Resuming: an interrupted slide keeps its finished batches in ``STEM.work/``; the next call with the
same settings infers only the remaining tiles, and since blending runs over the stored tile maps in
tile order, the result is identical to an uninterrupted run. A slide whose ``STEM.json`` exists is
done and skipped unless ``redo``. Memory: the accumulators and the map are files (``numpy.memmap``),
the thumbnails and the region grid are at most ``THUMBNAIL_MAX_SIDE``, ``OVERLAY_MAX_SIDE`` and
``REGION_MAX_SIDE`` pixels on a side, and tile results are read back one batch file at a time.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from histocam.core.visual import colormap_lut, overlay
from histocam.data.errors import DataError
from histocam.predict.export import save_png, write_pyramid
from histocam.predict.geojson import region_features, write_geojson
from histocam.predict.predictor import Predictor
from histocam.predict.slides import SlideReader, TileDataset, TileGrid, detect_tissue, tile_grid
from histocam.predict.stitch import Stitcher, release

REGION_MAX_SIDE = 2048
OVERLAY_MAX_SIDE = 2048
REGION_COLOR = (255, 0, 0)
DEFAULT_TILE = 512  # level-0 pixels: the CAMELYON16-512 patches (survey, Appendix B)


@dataclass
class SlideOptions:
    """How a slide is tiled and what is written (``None``: the default described)."""

    tile: int | None = None  # read pixels; None: the run's synthetic tile size, else DEFAULT_TILE
    overlap: int | None = None  # read pixels; None: a quarter tile
    mpp: float | None = None  # microns per read pixel; None: level 0
    map_downsample: int = 8  # read pixels per map pixel
    min_tissue: float = 0.0  # keep tiles whose tissue fraction exceeds this
    backend: str = "auto"
    batch_size: int = 32
    num_workers: int = 2
    weight_by_probability: bool = True
    regions: bool = True
    redo: bool = False
    keep_work: bool = False
    progress: bool = False


def resolve_tile(options: SlideOptions, default_tile: int) -> tuple[int, int]:
    """(tile, overlap) in read pixels, rounded to whole map pixels."""
    d = options.map_downsample
    if d < 1:
        raise ValueError(f"--map-downsample must be at least 1, got {d}")
    tile = options.tile if options.tile is not None else default_tile
    if tile < d:
        raise ValueError(f"--tile {tile} is smaller than the map downsample {d}")
    tile = tile // d * d
    overlap = options.overlap if options.overlap is not None else tile // 4
    overlap = min(overlap // d * d, (tile // d) // 2 * d)
    return tile, overlap


class SlideWork:
    """``STEM.work/``: the grid, its settings, and one ``.npz`` per inferred batch."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.batches = folder / "batches"

    def start(self, settings: dict, grid: TileGrid) -> None:
        """Create the folder, or check that an existing one was made with the same settings."""
        path = self.folder / "settings.json"
        if path.is_file():
            old = json.loads(path.read_text())
            if old != settings:
                changed = sorted(k for k in settings if old.get(k) != settings[k])
                raise DataError(self.folder, "partial results made with other settings "
                                f"({', '.join(changed)}): use the same settings to resume, or "
                                "--redo to start again")
            return
        self.batches.mkdir(parents=True, exist_ok=True)
        np.savez(self.folder / "grid.npz", positions=grid.positions, tissue=grid.tissue)
        path.write_text(json.dumps(settings, indent=1))

    def files(self) -> list[Path]:
        return sorted(self.batches.glob("batch-*.npz")) if self.batches.is_dir() else []

    def done(self) -> set[int]:
        finished: set[int] = set()
        for f in self.files():
            with np.load(f) as z:
                finished.update(z["index"].tolist())
        return finished

    def add(self, index: np.ndarray, probs: np.ndarray, classes: np.ndarray,
            maps: np.ndarray) -> None:
        """One batch, written to a temporary name and renamed (a batch is all there or absent)."""
        name = f"batch-{int(index[0]):09d}-{len(index):05d}.npz"
        tmp = self.batches / f".{name}.tmp.npz"
        np.savez(tmp, index=index, probs=probs, classes=classes, maps=maps)
        tmp.replace(self.batches / name)

    def in_tile_order(self):
        """(index, probs, class, map) of every finished tile, by tile index; one batch file is
        loaded at a time when the batches do not interleave (they are written in tile order)."""
        files = self.files()
        entries = []
        for k, f in enumerate(files):
            with np.load(f) as z:
                index = z["index"]
            entries.append(np.stack([index, np.full_like(index, k), np.arange(len(index))], 1))
        if not entries:
            return
        table = np.concatenate(entries)
        table = table[np.argsort(table[:, 0], kind="stable")]
        left = np.bincount(table[:, 1], minlength=len(files))
        cache: dict[int, dict] = {}
        for index, k, row in table.tolist():
            if k not in cache:
                with np.load(files[k]) as z:
                    cache[k] = {name: z[name] for name in ("probs", "classes", "maps")}
            z = cache[k]
            yield index, z["probs"][row], int(z["classes"][row]), z["maps"][row]
            left[k] -= 1
            if left[k] == 0:
                del cache[k]


def predict_slide(predictor: Predictor, path: Path, out: Path, stem: str,
                  options: SlideOptions, default_tile: int, aggregation_class: int | None
                  ) -> dict:
    """Predict one slide (module docstring); returns the slide summary (also ``STEM.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / f"{stem}.json"
    work = SlideWork(out / f"{stem}.work")
    if options.redo:
        shutil.rmtree(work.folder, ignore_errors=True)
        summary_path.unlink(missing_ok=True)
    elif summary_path.is_file():
        return {**json.loads(summary_path.read_text()), "skipped": True}
    reader = SlideReader(path, options.backend)
    scale = 1.0
    if options.mpp is not None:
        if reader.mpp is None:
            raise DataError(path, "--mpp needs the slide's own MPP, which the file does not give; "
                            "leave --mpp out to tile at level 0")
        scale = options.mpp / reader.mpp
    tile, overlap = resolve_tile(options, default_tile)
    thumb, tissue, thumb_ds = detect_tissue(reader, tile * scale)
    grid = tile_grid(reader.dimensions, tissue, thumb_ds, tile=tile, overlap=overlap, scale=scale,
                     map_downsample=options.map_downsample, min_tissue=options.min_tissue)
    settings = {"slide": str(Path(path).resolve()), "run": predictor.source,
                "dimensions": list(reader.dimensions),
                "tile": tile, "overlap": overlap, "scale": scale,
                "map_downsample": options.map_downsample, "min_tissue": options.min_tissue,
                "map_checkpoint": predictor.map_checkpoint,
                "label_checkpoint": predictor.label_checkpoint, "map_class": predictor.map_class,
                "eval_size": predictor.eval_size, "tiles": len(grid.positions)}
    work.start(settings, grid)
    todo = np.setdiff1d(np.arange(len(grid.positions)), np.fromiter(work.done(), np.int64))
    started = time.perf_counter()
    _infer(predictor, path, reader.backend, grid, todo, work, options)
    seconds = time.perf_counter() - started
    del thumb
    summary = _stitch_and_export(predictor, reader, grid, work, out, stem, options,
                                 aggregation_class, tissue)
    summary.update({"slide": str(path), "backend": reader.backend, "settings": settings,
                    "tiles_inferred_now": int(len(todo)),
                    "tiles_per_second": float(len(todo) / seconds) if len(todo) and seconds else None,
                    "options": {k: v for k, v in asdict(options).items() if k != "progress"}})
    reader.close()
    tmp = summary_path.with_name(f".{summary_path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(summary_path)  # written last: its presence means the slide is done
    if not options.keep_work:
        shutil.rmtree(work.folder, ignore_errors=True)
    return summary


def _infer(predictor: Predictor, path: Path, backend: str, grid: TileGrid, todo: np.ndarray,
           work: SlideWork, options: SlideOptions) -> None:
    if len(todo) == 0:
        return
    dataset = TileDataset(path, backend, grid, todo, predictor.eval_size)
    loader = torch.utils.data.DataLoader(dataset, options.batch_size, shuffle=False,
                                         num_workers=options.num_workers,
                                         pin_memory=predictor.device.type == "cuda")
    steps = loader
    if options.progress:
        from rich.progress import track

        steps = track(loader, description=f"{path.name}: {len(todo)} tiles", total=len(loader),
                      transient=True)
    n = grid.map_tile
    for index, images in steps:
        probs, classes, maps = predictor(images)
        small = F.adaptive_avg_pool2d(maps[:, None], (n, n))[:, 0] if maps.shape[-1] != n else maps
        work.add(index.numpy(), probs.numpy(), classes.numpy(),
                 small.numpy().astype(np.float16))


def _stitch_and_export(predictor: Predictor, reader: SlideReader, grid: TileGrid,
                       work: SlideWork, out: Path, stem: str, options: SlideOptions,
                       aggregation_class: int | None, tissue_mask: np.ndarray) -> dict:
    names = predictor.class_names
    n = grid.map_tile
    stitcher = Stitcher(grid.map_shape, n, grid.overlap // grid.map_downsample, work.folder)
    prob_sum = np.zeros(len(names))
    tissue_sum = 0.0
    prob_max = np.zeros(len(names))
    with (out / f"{stem}.tiles.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["tile", "x", "y", "width", "height", "tissue", "map_class",
                         *[f"p_{c}" for c in names]])
        for index, probs, cls, tile_map in work.in_tile_order():
            x, y, size = grid.level0(index)
            col, row = (int(v) // grid.map_downsample for v in grid.positions[index])
            weight = float(probs[cls]) if options.weight_by_probability else 1.0
            stitcher.add(row, col, tile_map.astype(np.float32) * weight)
            tissue = float(grid.tissue[index])
            prob_sum += tissue * probs
            tissue_sum += tissue
            prob_max = np.maximum(prob_max, probs)
            writer.writerow([index, x, y, size, size, f"{tissue:.4f}", names[cls],
                             *[f"{float(p):.6f}" for p in probs]])
    values = np.lib.format.open_memmap(out / f"{stem}.map.npy", "w+", np.float16, grid.map_shape)
    stitcher.write(values)
    stitcher.close()
    level0_ds = grid.map_downsample * grid.scale
    mpp = reader.mpp
    write_pyramid(values, out / f"{stem}.heatmap.tif", downsample=level0_ds, mpp=mpp,
                  scratch=work.folder, description={"slide": reader.path.name,
                                                    "map": "8-bit probability round(255 p)"})
    region_ds = max(1, math.ceil(max(grid.map_shape) / REGION_MAX_SIDE))
    coarse = _block_mean(values, region_ds)
    # the overlay and the region are on tissue only: a tile reaching onto glass maps it too
    on_tissue = np.asarray(Image.fromarray(tissue_mask.astype(np.uint8)).resize(
        (coarse.shape[1], coarse.shape[0]), Image.Resampling.NEAREST)).astype(bool)
    coarse = np.where(on_tissue, coarse, 0).astype(coarse.dtype)
    view = reader.thumbnail(max(1, math.ceil(max(reader.dimensions) / OVERLAY_MAX_SIDE)))
    size = (view.shape[1], view.shape[0])
    heat = np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BILINEAR))
    shown = np.asarray(Image.fromarray(on_tissue).resize(size, Image.Resampling.NEAREST))
    save_png(np.where(shown[..., None], overlay(view, heat, lut=colormap_lut()), view),
             out / f"{stem}.overlay.png")
    del view, heat
    summary = {"classes": names, "map_class": _class_name(names, predictor.map_class),
               "map_file": f"{stem}.map.npy", "map_level0_downsample": level0_ds,
               "mpp": mpp, "tiles": int(len(grid.positions)),
               "threshold": predictor.tau, "threshold_source": predictor.tau_source}
    summary.update(_aggregate(names, prob_sum, tissue_sum, prob_max, aggregation_class))
    if predictor.tau is not None and options.regions:
        region = coarse >= predictor.tau
        name = summary["map_class"] or "region"
        collection = region_features(region, coarse, name=name, color=REGION_COLOR,
                                     scale=level0_ds * region_ds, bounds=reader.dimensions)
        write_geojson(collection, out / f"{stem}.region.geojson")
        save_png(region.astype(np.uint8) * 255, out / f"{stem}.region.png")
        summary["region"] = {"polygons": len(collection["features"]),
                             "geojson_level0_px_per_unit": 1.0,
                             "png_level0_downsample": level0_ds * region_ds}
    elif options.regions:
        summary["region"] = f"not written: {predictor.tau_source}"
    del values
    return summary


def _class_name(names: list[str], index: int | None) -> str | None:
    return None if index is None else names[index]


def _aggregate(names, prob_sum, tissue_sum, prob_max, positive: int | None) -> dict:
    if tissue_sum <= 0:
        return {"prediction": None, "probabilities": None, "aggregation": "no tissue tile"}
    if positive is not None and len(names) == 2:
        p = float(prob_max[positive])
        probs = {names[positive]: p, names[1 - positive]: 1.0 - p}
        rule = (f"max: P({names[positive]}) of the slide = the largest tile P({names[positive]}) "
                "(any positive part makes the slide positive)")
    else:
        probs = {c: float(v) for c, v in zip(names, prob_sum / tissue_sum)}
        rule = "mean: class probabilities = tissue-weighted mean of the tiles'"
    return {"prediction": max(probs, key=probs.get), "probabilities": probs, "aggregation": rule}


def _block_mean(values: np.ndarray, k: int, band: int = 256) -> np.ndarray:
    """float32 mean over k×k blocks (edge blocks: the pixels present), band by band."""
    h, w = values.shape
    out = np.empty((math.ceil(h / k), math.ceil(w / k)), np.float32)
    for r in range(0, out.shape[0], band):
        block = np.asarray(values[r * k:(r + band) * k], np.float32)
        rows = math.ceil(block.shape[0] / k)
        padded = np.full((rows * k, out.shape[1] * k), np.nan, np.float32)
        padded[:block.shape[0], :w] = block
        out[r:r + rows] = np.nanmean(padded.reshape(rows, k, out.shape[1], k), axis=(1, 3))
        release(values)
    return out
