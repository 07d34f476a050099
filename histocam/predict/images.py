"""Prediction on image files: the predicted class and probabilities, the map, overlays, regions.

Each image is read as RGB (``histocam.data.io.read_image``), resized to the run's evaluation size as
in evaluation (docs/protocol.md, "Preprocessing"), and given to the predictor; its map (the method's
own, in [0, 1]) is resized bilinearly back to the image's size. Per image ``STEM``: ``STEM.map.npy``
(float16, H×W), ``STEM.map.png`` (8-bit, round(255·p)), ``STEM.overlay.png`` (the heatmap blended on
the image) and, with a threshold (τ*), ``STEM.region.png`` (map ≥ τ, 0/255) and
``STEM.region.geojson`` (its polygons in pixel coordinates). One ``predictions.csv`` lists every
image with its predicted class and class probabilities.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from histocam.core.progress import track
from histocam.core.visual import colormap_lut, overlay, to_uint8
from histocam.data.errors import DataError
from histocam.data.io import read_image
from histocam.data.transforms import model_input, resize_maps
from histocam.predict.export import save_png
from histocam.predict.inputs import unique_stems
from histocam.predict.predictor import Predictor
from histocam.wsi.geojson import region_features, write_geojson

REGION_COLOR = (255, 0, 0)


class ImageFiles(torch.utils.data.Dataset):
    """(index, RGB uint8, 3×E×E tensor) per image; a read error is returned, not raised, so that
    the main process raises it with its file name even from a DataLoader worker."""

    def __init__(self, paths: list[Path], eval_size: int, stain_normalize: str = "none") -> None:
        self.paths, self.eval_size, self.stain_normalize = paths, eval_size, stain_normalize

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        try:
            rgb, _ = read_image(self.paths[i])
        except DataError as exc:
            return {"index": i, "error": str(exc)}
        return {"index": i, "rgb": rgb,
                "image": model_input(rgb, self.eval_size, self.stain_normalize)}


@dataclass
class ImageOutputs:
    """Which files to write per image."""

    maps: bool = True
    overlays: bool = True
    regions: bool = True


def predict_images(predictor: Predictor, paths: list[Path], out: Path, *, batch_size: int = 16,
                   num_workers: int = 0, outputs: ImageOutputs | None = None,
                   progress: bool = False, csv_name: str = "predictions.csv",
                   stems: list[str] | None = None,
                   on_error: Callable[[Path, str], None] | None = None) -> Path:
    """Predict every image of ``paths`` into ``out`` (module docstring); returns the CSV path.
    ``stems``: the output names (default: unique among ``paths``; a shard of a longer list passes
    the names made unique over the whole list). An unreadable image raises its DataError, or is
    given to ``on_error(path, message)`` and left out."""
    outputs = outputs or ImageOutputs()
    out.mkdir(parents=True, exist_ok=True)
    stems = stems if stems is not None else unique_stems(paths)
    loader = torch.utils.data.DataLoader(ImageFiles(paths, predictor.eval_size,
                                                    predictor.stain_normalize), batch_size,
                                         shuffle=False, num_workers=num_workers,
                                         collate_fn=list)
    steps = track(loader, "images", len(loader), unit="batches") if progress else loader
    lut = colormap_lut()
    tau = predictor.tau if outputs.regions else None
    names = predictor.class_names
    csv_path = out / csv_name
    tmp = csv_path.with_name(f".{csv_path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "output", "prediction", *[f"p_{n}" for n in names], "map_class",
                         "label_checkpoint", "map_checkpoint", "threshold"])
        for batch in steps:
            for item in batch:
                if "error" in item:
                    if on_error is None:
                        raise DataError(None, item["error"])
                    on_error(paths[item["index"]], item["error"])
            batch = [item for item in batch if "error" not in item]
            if not batch:
                continue
            probs, classes, maps = predictor(torch.stack([b["image"] for b in batch]))
            for item, p, c, m in zip(batch, probs, classes, maps):
                i = item["index"]
                rgb = item["rgb"]
                full = resize_maps(m, rgb.shape[:2]).clamp_(0.0, 1.0).numpy()
                stem = stems[i]
                _write_image_outputs(out, stem, rgb, full, tau, names[int(c)], outputs, lut)
                writer.writerow([str(paths[i]), stem, names[int(p.argmax())],
                                 *[f"{float(v):.6f}" for v in p], names[int(c)],
                                 predictor.label_checkpoint, predictor.map_checkpoint,
                                 "" if tau is None else f"{tau:.6g}"])
    tmp.replace(csv_path)
    return csv_path


def _write_image_outputs(out: Path, stem: str, rgb: np.ndarray, values: np.ndarray,
                         tau: float | None, class_name: str, outputs: ImageOutputs,
                         lut: np.ndarray) -> None:
    if outputs.maps:
        np.save(out / f"{stem}.map.npy", values.astype(np.float16))
        save_png(to_uint8(values), out / f"{stem}.map.png")
    if outputs.overlays:
        save_png(overlay(rgb, values, lut=lut), out / f"{stem}.overlay.png")
    if tau is not None:
        region = values >= tau
        save_png(region.astype(np.uint8) * 255, out / f"{stem}.region.png")
        write_geojson(region_features(region, values, name=class_name, color=REGION_COLOR),
                      out / f"{stem}.region.geojson")
