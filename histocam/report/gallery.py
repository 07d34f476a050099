"""Galleries: the best, worst and random test images of each class, as rows of
image | map | region at τ* (the map thresholded at the τ* chosen on valpx), the mask drawn as an
outline on each panel (``core.visual.outline``: an all-foreground mask frames the panel), in an
HTML table whose headers name each block and panel.

Images are ranked by their per-image AP from the evaluation's per-image CSV; a class without
foreground (e.g. normal lymph-node tiles, whose AP is undefined) is ranked by the background IoU
at τ* instead. The maps come from the evaluation's stored maps (``--save-maps``) when present,
otherwise the checkpoint is run on the picked images only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from histocam.core.results import PerImageRow
from histocam.core.visual import (
    colorize,
    downscale,
    downscale_mask,
    image_to_uint8,
    outline,
    region_overlay,
)
from histocam.data.transforms import JointTransform
from histocam.maps.store import npz_key
from histocam.report.html import esc, fmt, image
from histocam.report.load import CheckpointResults, RunResults
from histocam.report.plots import array_uri

KINDS = ("best", "worst", "random")
PANELS = ("image", "map", "region ≥ τ*")
SCORES = {"ap": "AP", "iou_bg": "background IoU"}  # what images are ranked by, in words


@dataclass
class GalleryRow:
    kind: str
    image_id: str
    score_name: str
    score: float
    panels: list[np.ndarray]  # PANELS (uint8), the mask outlined on each


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
        panels = [downscale(p, panel) for p in (image_to_uint8(image), colorize(m),
                                                 region_overlay(image, m, tau))]
        mask = downscale_mask(item["mask"].numpy() > 0.5, panels[0].shape[:2])
        out.append(GalleryRow(kind, item["id"], key, row.score(key),
                              [outline(p, mask) for p in panels]))
    return out


def gallery_table(rows: list[GalleryRow]) -> str:
    """Best, worst and random side by side, rank by rank downwards, as an HTML table whose
    headers name each block and panel; under each image its id and score."""
    by_kind = [(kind, [r for r in rows if r.kind == kind]) for kind in KINDS]
    by_kind = [(kind, chosen) for kind, chosen in by_kind if chosen]
    n = len(PANELS)
    gap, head_gap = '<td class="gap"></td>', '<th class="gap"></th>'
    kinds = head_gap.join(
        f'<th class="kind" colspan="{n}">{esc(kind)} ({esc(SCORES[chosen[0].score_name])})</th>'
        for kind, chosen in by_kind)
    panels = head_gap.join("".join(f"<th>{esc(p)}</th>" for p in PANELS) for _ in by_kind)
    body = []
    for rank in range(max(len(chosen) for _, chosen in by_kind)):
        images, captions = [], []
        for _, chosen in by_kind:
            if rank < len(chosen):
                r = chosen[rank]
                images.append("".join(f"<td>{image(array_uri(p, jpeg_quality=85), PANELS[i])}</td>"
                                      for i, p in enumerate(r.panels)))
                captions.append(f'<td colspan="{n}">{esc(r.image_id)}: '
                                f"{esc(SCORES[r.score_name])} {fmt(r.score)}</td>")
            else:
                images.append("<td></td>" * n)
                captions.append(f'<td colspan="{n}"></td>')
        body += [f"<tr>{gap.join(images)}</tr>", f'<tr class="note">{gap.join(captions)}</tr>']
    return (f'<table class="gallery"><thead><tr>{kinds}</tr><tr>{panels}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


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


