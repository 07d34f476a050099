"""Galleries: the best, worst and random test images of each class, as rows of
image | mask | map | region at τ* (the map thresholded at the τ* chosen on valpx).

Images are ranked by their per-image AP from the evaluation's per-image CSV; a class without
foreground (e.g. normal lymph-node tiles, whose AP is undefined) is ranked by the background IoU
at τ* instead. The maps come from the evaluation's stored maps (``--save-maps``) when present,
otherwise the checkpoint is run on the picked images only.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from histocam.core.results import PerImageRow
from histocam.core.visual import colorize, downscale, grid, image_to_uint8, region_overlay
from histocam.data.transforms import JointTransform
from histocam.maps.store import npz_key
from histocam.report.load import CheckpointResults, RunResults

KINDS = ("best", "worst", "random")


@dataclass
class GalleryRow:
    kind: str
    image_id: str
    score_name: str
    score: float
    panels: list[np.ndarray]  # image, mask, map, region (uint8)


def pick(rows: list[PerImageRow], n: int, seed: int = 0
         ) -> list[tuple[str, PerImageRow, str]]:
    """(kind, row, score name) for the ``n`` best, ``n`` worst and ``n`` random rows of one class
    (an image appears once: worst and random avoid the ones already shown)."""
    key = "ap" if any(not math.isnan(r.score("ap")) for r in rows) else "iou_bg"
    scored = [r for r in rows if not math.isnan(r.score(key))]
    ranked = sorted(scored, key=lambda r: (-r.score(key), r.id))
    best = ranked[:n]
    rest = ranked[len(best):]
    worst = list(reversed(rest[-n:])) if rest else []
    left = rest[:len(rest) - len(worst)]
    rng = np.random.default_rng(seed)
    random = [left[i] for i in sorted(rng.choice(len(left), min(n, len(left)), replace=False))] \
        if left else []
    return [(kind, r, key) for kind, chosen in zip(KINDS, (best, worst, random)) for r in chosen]


def gallery_rows(results: RunResults, ckpt: CheckpointResults, label: int, n: int = 3,
                 panel: int = 96, device: str = "cpu", split: str = "test",
                 dataset=None, methods: dict | None = None) -> list[GalleryRow]:
    """The gallery of one class at one checkpoint (``dataset``: the split, opened by the caller;
    ``methods``: checkpoint -> loaded method, filled on first use and shared across classes)."""
    chosen = pick([r for r in ckpt.per_image if r.label == label], n)
    if not chosen:
        return []
    config = results.run.config.data
    index = {image_id: i for i, image_id in enumerate(dataset.ids)}
    missing = [r.id for _, r, _ in chosen if r.id not in index]
    if missing:
        raise ValueError(f"{results.run.dir}: images {missing[:3]} of the per-image scores are not "
                         f"in the {split} split of its data (was the dataset regenerated?)")
    transform = JointTransform.from_config(config, train=False)
    items = [transform(dataset[index[r.id]]) for _, r, _ in chosen]
    maps = _stored_maps(ckpt, [it["id"] for it in items])
    if maps is None:
        maps = _computed_maps(results, ckpt.checkpoint, items, device,
                              methods if methods is not None else {})
    tau = ckpt.tau_star if ckpt.tau_star is not None else 0.5
    out = []
    for (kind, row, key), item, m in zip(chosen, items, maps):
        image = item["image"].permute(1, 2, 0).numpy()
        if m.shape != image.shape[:2]:
            raise ValueError(f"{ckpt.maps}: map of {item['id']} is {m.shape}, the image is "
                             f"{image.shape[:2]}")
        panels = [image_to_uint8(image), image_to_uint8(item["mask"].numpy()), colorize(m),
                  region_overlay(image, m, tau)]
        out.append(GalleryRow(kind, item["id"], key, row.score(key),
                              [downscale(p, panel) for p in panels]))
    return out


def gallery_image(rows: list[GalleryRow]) -> np.ndarray:
    """Best, worst and random side by side (4 panels each), rank by rank downwards; a kind with
    fewer images leaves white panels."""
    by_kind = [[r for r in rows if r.kind == kind] for kind in KINDS]
    by_kind = [k for k in by_kind if k]
    blank = np.full_like(rows[0].panels[0], 255)
    depth = max(len(k) for k in by_kind)
    lines = []
    for rank in range(depth):
        line: list[np.ndarray] = []
        for i, kind in enumerate(by_kind):
            if i:
                line.append(np.full_like(blank, 255)[:, : max(1, blank.shape[1] // 6)])
            line += kind[rank].panels if rank < len(kind) else [blank] * 4
        lines.append(np.concatenate(line, axis=1))
    return grid([[line] for line in lines])


def _stored_maps(ckpt: CheckpointResults, ids: list[str]) -> list[np.ndarray] | None:
    if ckpt.maps is None:
        return None
    with np.load(ckpt.maps) as stored:
        if not all(npz_key(i) in stored.files for i in ids):
            return None
        return [stored[npz_key(i)].astype(np.float32) for i in ids]


def _computed_maps(results: RunResults, checkpoint: str, items: list[dict], device: str,
                   methods: dict) -> list[np.ndarray]:
    if checkpoint not in methods:
        methods[checkpoint] = results.run.method(checkpoint, device)[0]
    method = methods[checkpoint]
    dev = next(method.parameters()).device
    images = torch.stack([it["image"] for it in items]).to(dev)
    labels = torch.stack([it["label"] for it in items]).to(dev)
    with torch.no_grad():  # top-down CAMs re-enable gradients where they need them
        maps = method.localize(images, labels).detach().float().cpu().numpy()
    return list(maps)


@contextmanager
def one_cpu_thread():
    """torch on one CPU thread for the gallery's few images: more threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
