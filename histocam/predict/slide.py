"""Prediction on one whole slide: tissue → tiles at the run's scale → inference → stitched map → files.

Scale: tiles are cut at the microns per pixel the run was trained at (``histocam.data.mpp``;
``--mpp``/``--magnification`` override it): a slide of level-0 MPP m is read at scale s = run MPP / m
level-0 pixels per tile pixel, from the nearest pyramid level and resized (``histocam.wsi``). The
slide's MPP comes from its file, ``--mpp-table`` or ``--slide-mpp`` (``histocam.wsi.scale``).

Steps: tissue detection on a thumbnail (``histocam.wsi.tissue``) → the tissue tiles
(``histocam.wsi.grid``) → tiles read in DataLoader workers and inferred in batches, each batch's
results stored in ``work/`` (``histocam.wsi.work``) → blending in tile order with windows that sum
to one (``histocam.wsi.stitch``) → the map restricted to tissue → files (``slide_outputs.py``) and
the slide's label and score (``aggregate.py``).

The slide map (``slide_map``):

- ``probability``: each tile contributes its probability of the map's class at its centre, and
  the map between centres is their bilinear interpolation (``histocam.wsi.stitch``): a smooth field
  with no tile pattern, uniform over a uniform region.
  The default for methods whose maps are min–max normalised per input (CAMs): such a tile map says
  where inside the tile, never how much, so tile maps pieced together make a honeycomb of per-tile
  maxima. Its region threshold is ``--threshold`` or 0.5 (τ* is a threshold of pixel maps).
- ``map``: each tile's map of the map class, multiplied by that probability when
  ``weight_by_probability``: the default for methods whose maps are probabilities (PixelCAM, NEGEV,
  U-Net). Its region threshold is the run's τ* or ``--threshold``.

Resuming: an interrupted slide keeps its finished batches in ``work/``; the next call with the same
settings infers only the remaining tiles, and since blending runs over the stored results in tile
order, the result is identical to an uninterrupted run. ``STEM.json`` is written last and records
what made it (``identity``: the slide file, the run, the checkpoints' SHA-256, every option): a
later call with the same identity returns it as done; with another, it is refused unless ``redo``.
Memory: the accumulators and the map are files (``numpy.memmap``); thumbnails and the region grid
are at most 2048 pixels on a side; tile results are read back one batch file at a time.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from histocam.core.progress import track
from histocam.data.errors import DataError
from histocam.predict.aggregate import AGGREGATIONS, DEFAULT_TOP_K, SlideScore, resolve_aggregation
from histocam.predict.predictor import Predictor
from histocam.predict.slide_outputs import MapInfo, region_downsample, write_outputs
from histocam.predict.tile_outputs import TileWriter
from histocam.wsi.backends import BACKEND_CHOICES
from histocam.wsi.grid import TileGrid, tile_grid
from histocam.wsi.maps import block_mean, mask_map, resample_mask
from histocam.wsi.reader import SlideReader
from histocam.wsi.scale import magnification_mpp, positive_mpp, slide_mpp
from histocam.wsi.stitch import Stitcher
from histocam.wsi.tiles import TileDataset
from histocam.wsi.tissue import TissueOptions, slide_tissue
from histocam.wsi.work import SlideWork

DEFAULT_TILE = 512  # tile pixels: the CAMELYON16-512 patches (survey, Appendix B)
SLIDE_MAPS = ("auto", "probability", "map")


@dataclass
class SlideOptions:
    """How a slide is tiled and what is written (``None``: the default described)."""

    tile: int | None = None  # tile pixels; None: the run's synthetic tile size, else DEFAULT_TILE
    overlap: int | None = None  # tile pixels; None: a quarter tile
    mpp: float | None = None  # microns per tile pixel; None: the run's
    magnification: float | None = None  # instead of mpp: 10 / magnification
    slide_mpp: float | None = None  # level-0 MPP of slides that record none
    mpp_table: dict[str, float] | None = None  # slide -> level-0 MPP (``wsi.scale``)
    map_downsample: int = 8  # tile pixels per map pixel
    min_tissue: float = 0.0  # keep tiles whose tissue fraction exceeds this
    tissue: TissueOptions = field(default_factory=TissueOptions)
    backend: str = "auto"
    batch_size: int = 32
    num_workers: int = 2
    slide_map: str = "auto"
    weight_by_probability: bool = True
    aggregation: str = "auto"
    top_k: int = DEFAULT_TOP_K
    regions: bool = True
    region_smooth_um: float = 20.0
    region_min_area_um2: float = 10_000.0
    heatmap_rgba: bool = False
    overlay_scale: str = "fixed"  # fixed, or pNN: 0 to the NN-th percentile on tissue
    redo: bool = False
    keep_work: bool = False
    progress: bool = False

    def check(self) -> SlideOptions:
        """These options, or a ValueError naming the first one out of range."""
        def positive_int(value: int | None, option: str) -> None:
            if value is not None and value < 1:
                raise ValueError(f"{option} {value}: must be at least 1")

        positive_int(self.tile, "--tile")
        positive_int(self.map_downsample, "--map-downsample")
        positive_int(self.batch_size, "--batch-size")
        positive_int(self.top_k, "--top-k")
        if self.tile is not None and self.tile < self.map_downsample:
            raise ValueError(f"--tile {self.tile} is smaller than --map-downsample "
                             f"{self.map_downsample}")
        if self.overlap is not None and not 0 <= self.overlap <= (self.tile or 1 << 30) // 2:
            raise ValueError(f"--overlap {self.overlap}: must be between 0 and half the tile")
        if self.mpp is not None and self.magnification is not None:
            raise ValueError("--mpp and --magnification say the same thing: give one")
        for value, option in ((self.mpp, "--mpp"), (self.slide_mpp, "--slide-mpp")):
            if value is not None:
                positive_mpp(value, option)
        if self.magnification is not None:
            magnification_mpp(self.magnification)
        if not 0.0 <= self.min_tissue < 1.0:
            raise ValueError(f"--min-tissue {self.min_tissue}: a fraction in [0, 1)")
        if self.backend not in BACKEND_CHOICES:
            raise ValueError(f"--backend {self.backend!r}: one of {', '.join(BACKEND_CHOICES)}")
        if self.num_workers < 0:
            raise ValueError(f"--workers {self.num_workers}: must be 0 or more")
        if self.slide_map not in SLIDE_MAPS:
            raise ValueError(f"--slide-map {self.slide_map!r}: one of {', '.join(SLIDE_MAPS)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"--aggregation {self.aggregation!r}: one of {', '.join(AGGREGATIONS)}")
        for value, option in ((self.region_smooth_um, "--region-smooth"),
                              (self.region_min_area_um2, "--region-min-area")):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{option} {value}: must be 0 or more")
        if self.overlay_scale != "fixed" and not (
                self.overlay_scale[:1] == "p" and self.overlay_scale[1:].isdigit()
                and 0 < int(self.overlay_scale[1:]) <= 100):
            raise ValueError(f"--overlay-scale {self.overlay_scale!r}: fixed, or pNN (e.g. p99)")
        self.tissue.check()
        return self


def tile_mpp(options: SlideOptions, run_mpp: tuple[float | None, str]) -> tuple[float, str]:
    """(microns per tile pixel, where it comes from): ``--mpp``, ``--magnification``, else the
    run's training scale; a ValueError that says how when none is known."""
    if options.mpp is not None:
        return float(options.mpp), "--mpp"
    if options.magnification is not None:
        return magnification_mpp(options.magnification), f"--magnification {options.magnification:g}"
    if run_mpp[0] is None:
        raise ValueError(f"cannot tile slides: {run_mpp[1]}")
    return float(run_mpp[0]), f"the run's training data ({run_mpp[1]})"


def resolve_tile(options: SlideOptions, default_tile: int) -> tuple[int, int]:
    """(tile, overlap) in tile pixels, rounded down to whole map pixels."""
    d = options.map_downsample
    tile = options.tile if options.tile is not None else default_tile
    if tile < d:
        raise ValueError(f"--tile {tile} is smaller than the map downsample {d}")
    tile = tile // d * d
    overlap = options.overlap if options.overlap is not None else tile // 4
    overlap = min(overlap // d * d, (tile // d) // 2 * d)
    return tile, overlap


def map_kind(options: SlideOptions, predictor: Predictor) -> str:
    """``probability`` or ``map`` (module docstring)."""
    if options.slide_map != "auto":
        return options.slide_map
    return "map" if getattr(predictor.map_method, "probability_maps", False) else "probability"


def _file_identity(path: Path) -> dict:
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def read_done(summary_path: Path) -> dict | None:
    """The stored summary of a finished slide, or None; a DataError naming it when unreadable."""
    if not summary_path.is_file():
        return None
    try:
        stored = json.loads(summary_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(summary_path, f"unreadable result ({type(exc).__name__}): pass --redo to "
                        "predict the slide again") from None
    return stored if isinstance(stored, dict) else {}


def predict_slide(predictor: Predictor, path: Path, folder: Path, stem: str,
                  options: SlideOptions, *, default_tile: int,
                  run_mpp: tuple[float | None, str], positive: int | None) -> dict:
    """Predict one slide into ``folder`` (module docstring); returns its summary (``STEM.json``),
    with ``skipped`` when it was already done by the same identity."""
    if options.redo:  # the slide's folder holds only this slide's files
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    summary_path = folder / f"{stem}.json"
    work = SlideWork(folder / "work")
    mpp, mpp_source = tile_mpp(options, run_mpp)
    rule = resolve_aggregation(options.aggregation, positive, options.top_k)
    kind = map_kind(options, predictor)
    reader = SlideReader(path, options.backend)
    try:
        level0_mpp, level0_source = slide_mpp(path, reader.mpp, options.mpp_table,
                                              options.slide_mpp)
        scale = mpp / level0_mpp
        tile, overlap = resolve_tile(options, default_tile)
        threshold, threshold_source = _threshold(predictor, kind)
        settings = _settings(path, reader, predictor, options, tile, overlap, scale, kind)
        identity = {**settings, "aggregation": rule, "top_k": options.top_k,
                    "threshold": threshold, "regions": options.regions,
                    "region_smooth_um": options.region_smooth_um,
                    "region_min_area_um2": options.region_min_area_um2,
                    "heatmap_rgba": options.heatmap_rgba, "overlay_scale": options.overlay_scale}
        stored = read_done(summary_path)
        if stored is not None:
            if stored.get("identity") == identity:
                return {**stored, "skipped": True}
            old = stored.get("identity") or {}
            changed = sorted(k for k in identity if old.get(k) != identity[k])
            raise DataError(summary_path, "already holds a result made by another run, checkpoint"
                            f" or options ({', '.join(changed)}): pass --redo to replace it, or "
                            "choose another --out")
        thumb, tissue, thumb_ds = slide_tissue(reader, level0_mpp, options.tissue)
        grid = tile_grid(reader.dimensions, tissue.mask, thumb_ds, tile=tile, overlap=overlap,
                         scale=scale, map_downsample=options.map_downsample,
                         min_tissue=options.min_tissue)
        work.start({**settings, "tiles": len(grid.positions)}, grid)
        todo = np.setdiff1d(np.arange(len(grid.positions)), work.done())
        started = time.perf_counter()
        _infer(predictor, path, reader.backend, grid, todo, work, options, kind)
        seconds = time.perf_counter() - started
        score = SlideScore(predictor.class_names, rule, positive, options.top_k)
        values = _stitch(predictor, grid, work, folder, stem, options, kind, score)
        display = block_mean(values, region_downsample(values.shape))
        _mask_to_tissue(values, tissue.mask, thumb_ds, grid.map_level0)
        map_name = _class_name(predictor.class_names, predictor.map_class)
        info = MapInfo(title=_title(map_name, kind, options), region_name=map_name or "region",
                       threshold=threshold, threshold_source=threshold_source,
                       overlay_scale=options.overlay_scale, regions=options.regions,
                       region_smooth_um=options.region_smooth_um,
                       region_min_area_um2=options.region_min_area_um2,
                       heatmap_rgba=options.heatmap_rgba)
        written = write_outputs(folder, stem, values, display, thumb, tissue, thumb_ds,
                                grid.map_level0, level0_mpp, reader.dimensions, info, work.folder,
                                {"slide": reader.path.name, "map": f"{info.title}: round(255 p)",
                                 "level0_mpp": level0_mpp})
        del values
        summary = {"slide": str(path), "classes": predictor.class_names, "map_class": map_name,
                   "slide_map": kind, **score.result(written.pop("area_fraction")),
                   "tiles": int(len(grid.positions)),
                   "scale": {"slide_mpp": level0_mpp, "slide_mpp_source": level0_source,
                             "tile_mpp": mpp, "tile_mpp_source": mpp_source,
                             "level0_per_tile_pixel": scale, "map_level0_downsample":
                             grid.map_level0, "map_mpp": grid.map_level0 * level0_mpp},
                   "map_level0_downsample": grid.map_level0, "mpp": level0_mpp,
                   "tissue": {"area_mm2": tissue.area_um2 / 1e6, "glass": list(tissue.glass),
                              "glass_source": tissue.glass_source,
                              "thumbnail_level0_downsample": thumb_ds, **options.tissue.as_dict()},
                   **written, "backend": reader.backend, "settings": settings,
                   "tiles_inferred_now": int(len(todo)),
                   "tiles_per_second": float(len(todo) / seconds) if len(todo) and seconds else None,
                   "identity": identity}
    finally:
        reader.close()
    tmp = summary_path.with_name(f".{summary_path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(summary_path)  # written last: its presence means the slide is done
    if not options.keep_work:
        shutil.rmtree(work.folder, ignore_errors=True)
    return summary


def _settings(path: Path, reader: SlideReader, predictor: Predictor, options: SlideOptions,
              tile: int, overlap: int, scale: float, kind: str) -> dict:
    """What the tiles' results depend on: the slide file, the run, its checkpoints, the tiling
    and the tissue (the partial results are reused only for the same)."""
    return {"slide": _file_identity(path), "dimensions": list(reader.dimensions),
            "backend": reader.backend, "run": predictor.source,
            "checkpoints": predictor.checkpoints, "map_checkpoint": predictor.map_checkpoint,
            "label_checkpoint": predictor.label_checkpoint, "map_class": predictor.map_class,
            "eval_size": predictor.eval_size,
            "stain_normalize": predictor.stain_normalize, "tile": tile, "overlap": overlap, "scale": scale,
            "map_downsample": options.map_downsample, "min_tissue": options.min_tissue,
            "tissue": options.tissue.as_dict(), "slide_map": kind,
            "weight": options.weight_by_probability}


def _threshold(predictor: Predictor, kind: str) -> tuple[float | None, str]:
    if kind == "map" or predictor.tau_source == "--threshold":
        return predictor.tau, predictor.tau_source
    return 0.5, "0.5: the tiles' decision boundary (τ* is a threshold of pixel maps)"


def _title(map_name: str | None, kind: str, options: SlideOptions) -> str:
    what = f"P({map_name})" if map_name else "P(predicted class)"
    if kind == "probability":
        return f"{what} of the tiles"
    return f"{map_name or 'predicted class'} map" + (f" × {what}" if options.weight_by_probability
                                                     else "")


def _class_name(names: list[str], index: int | None) -> str | None:
    return None if index is None else names[index]


def _progress(iterable, description: str, total: int, enabled: bool):
    """``iterable`` counted by the progress display (``histocam.core.progress``) when
    ``enabled``."""
    return track(iterable, description, total, unit="batches") if enabled else iterable


def _infer(predictor: Predictor, path: Path, backend: str, grid: TileGrid, todo: np.ndarray,
           work: SlideWork, options: SlideOptions, kind: str) -> None:
    if len(todo) == 0:
        return
    dataset = TileDataset(path, backend, grid, todo, predictor.eval_size,
                          predictor.stain_normalize)
    loader = torch.utils.data.DataLoader(dataset, options.batch_size, shuffle=False,
                                         num_workers=options.num_workers,
                                         pin_memory=predictor.device.type == "cuda")
    n = grid.map_tile
    try:
        for index, images, errors in _progress(loader, f"{path.name}: {len(todo)} tiles",
                                               len(loader), options.progress):
            problem = next((e for e in errors if e), None)
            if problem:
                raise DataError(None, problem)
            if kind == "probability":
                probs, classes = predictor.classify(images)
                small = np.zeros((len(index), 0, 0), np.float16)
            else:
                probs, classes, maps = predictor(images)
                if maps.shape[-1] != n:
                    maps = F.adaptive_avg_pool2d(maps[:, None], (n, n))[:, 0]
                small = maps.numpy().astype(np.float16)
            work.add(index.numpy(), probs.numpy(), classes.numpy(), small)
    except RuntimeError as exc:  # a tile reader process killed by a decoder crash
        if "DataLoader worker" not in str(exc):
            raise
        raise DataError(path, f"a tile reader process died ({' '.join(str(exc).split())})") \
            from None


def _stitch(predictor: Predictor, grid: TileGrid, work: SlideWork, folder: Path, stem: str,
            options: SlideOptions, kind: str, score: SlideScore) -> np.ndarray:
    """The blended map (``STEM.map.npy``, a float16 memmap) and the per-tile files."""
    stitcher = Stitcher(grid.map_shape, grid.map_tile, grid.overlap // grid.map_downsample,
                        work.folder, values=kind == "probability")
    with TileWriter(folder, stem, grid, predictor.class_names) as tiles:
        for index, probs, cls, tile_map in work.in_tile_order():
            col, row = (int(v) // grid.map_downsample for v in grid.positions[index])
            p = float(probs[cls])
            if kind == "probability":
                stitcher.add(row, col, p)
            else:
                stitcher.add(row, col, tile_map.astype(np.float32) *
                             (p if options.weight_by_probability else 1.0))
            score.add(probs, float(grid.tissue[index]))
            tiles.add(index, probs, cls)
    values = np.lib.format.open_memmap(folder / f"{stem}.map.npy", "w+", np.float16,
                                       grid.map_shape)
    stitcher.write(values)
    stitcher.close()
    return values


def _mask_to_tissue(values: np.ndarray, tissue: np.ndarray, thumb_ds: int,
                    map_level0: float, band: int = 1024) -> None:
    """values = 0 off the tissue mask (sampled at the map pixels' centres), band by band."""
    for r in range(0, values.shape[0], band):
        rows = min(band, values.shape[0] - r)
        keep = resample_mask(tissue, thumb_ds, (rows, values.shape[1]), map_level0, row0=r)
        mask_map(values[r:r + rows], keep)
