"""Score histograms of foreground and background pixels: the state behind PxAP and confusion rates.

docs/protocol.md, "Metrics": thresholds τ = 0, 0.001, …, 0.999 (``np.arange(0, 1, 0.001)``, 1000
values), bin edges = thresholds + [1, 2, 3] (1002 bins), counts summed over the dataset.
``bin_index`` reproduces ``np.histogram``'s binning exactly (value v goes to the last edge ≤ v),
including values that sit on an edge, for float32 maps too: float32 comparisons against float64
edges are made exact by rounding each edge *up* to the next float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from histocam.core.collectives import all_reduce_sum, distributed_ready
from histocam.metrics.protocol import Batch, Metric

THRESHOLDS = np.arange(0, 1, 0.001)
EDGES = np.concatenate([THRESHOLDS, [1.0, 2.0, 3.0]])
N_BINS = EDGES.size - 1  # 1002


def _edges_for(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if dtype == torch.float64:
        return torch.as_tensor(EDGES, dtype=torch.float64, device=device)
    e32 = EDGES.astype(np.float32)
    up = e32.astype(np.float64) < EDGES  # rounded down: move to the next float32 above
    e32[up] = np.nextafter(e32[up], np.float32(np.inf))
    if dtype == torch.float32:
        return torch.as_tensor(e32, device=device)
    raise TypeError(f"maps must be float32 or float64, got {dtype}")


def bin_index(scores: torch.Tensor) -> torch.Tensor:
    """Histogram bin of each score in [0, 1] (0..1000), identical to ``np.histogram(…, EDGES)``."""
    edges = _edges_for(scores.dtype, scores.device)
    return torch.bucketize(scores, edges, right=True) - 1


_CHUNK = 1 << 17  # elements per pass: keeps the temporaries in cache


def histogram_counts(scores: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """Counts per bin of background (first ``N_BINS``) and foreground (next ``N_BINS``) scores.

    Equal to ``np.histogram`` of each class with ``EDGES`` (tested). float32 maps take a fast
    path: the product of a float32 and 1000 is exact in float64 (24 + 10 significant bits), so
    ``trunc(float64(s) · 1000 + N_BINS · fg)`` is the exact bin floor(1000 s) offset by the class.
    floor(1000 s) changes at s = k/1000 and the reference binning at EDGES[k]; the two points are
    less than 1e-16 apart and no float32 lies between them (checked for every edge in the tests),
    so the two binnings agree on every float32 in [0, 1]. float64 maps, and devices without
    float64 (Apple MPS), use ``bin_index`` (same counts, slower).
    """
    s = scores.reshape(-1)
    fg = foreground.reshape(-1)
    fg = fg if fg.dtype == torch.bool else fg != 0
    if s.dtype != torch.float32 or s.device.type == "mps":
        return torch.bincount(bin_index(s) + N_BINS * fg.long(), minlength=2 * N_BINS)
    fg = fg.view(torch.uint8)
    counts = torch.zeros(2 * N_BINS, dtype=torch.int64, device=s.device)
    for start in range(0, s.numel(), _CHUNK):
        x = s[start : start + _CHUNK].double().mul_(1000.0)
        x.add_(fg[start : start + _CHUNK], alpha=N_BINS)
        counts += torch.bincount(x.to(torch.int32), minlength=2 * N_BINS)
    return counts


class PixelHistogram(Metric):
    """Streaming dataset-level histograms of map scores for foreground and background pixels.

    ``update`` per batch, ``merge``/``sync`` to combine processes (integer counts are summed, so
    both are exact and order-free), ``reset``. Images without a mask are not passed here; an
    all-background mask adds background counts only. ``compute`` gives the counts, PxAP (None
    without foreground pixels) and the image/pixel totals; ``histocam.metrics.localization`` and
    ``confusion`` derive the other protocol metrics from ``fg``/``bg``.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.reset()

    def reset(self) -> None:
        self.fg = torch.zeros(N_BINS, dtype=torch.int64, device=self.device)
        self.bg = torch.zeros(N_BINS, dtype=torch.int64, device=self.device)
        self.n_images = 0

    needs = frozenset({"maps"})

    def update(self, batch: Batch) -> None:
        """Add the batch's annotated images: ``maps`` B×H×W in [0, 1], ``masks`` B×H×W (bool or
        {0, 1}).

        ``ignore`` (optional, B×H×W, bool or {0, 1}): True = the pixel counts neither as foreground
        nor as background, as the 255-valued pixels of the reference evaluator's masks built from
        the ``ignore_path`` column of ``localization.txt`` (wsolevaluation). That reference only
        ignores pixels outside the foreground (``ignore_box & ~foreground``); here every True pixel
        is dropped, so a caller mirroring it passes ``ignore & ~masks`` (histocam's readers already
        do). Ignored pixels' map values must still be valid maps (docs/protocol.md, "Maps").
        """
        b = batch.localized
        b.require(self, "maps", "masks")
        if len(b.maps):
            self._add(b.maps, b.masks, b.ids, b.ignore)

    def _add(self, maps: torch.Tensor, masks: torch.Tensor, ids: Sequence[str] | None,
             ignore: torch.Tensor | None) -> None:
        from histocam.metrics.validation import validate_ignore, validate_maps

        validate_maps(maps, masks, ids)
        ignore = validate_ignore(ignore, maps)
        if self.device is None:
            self.device = maps.device
            self.fg, self.bg = self.fg.to(maps.device), self.bg.to(maps.device)
        scores, truth = maps.to(self.device), masks.to(self.device).bool()
        if ignore is not None:
            keep = ~ignore.to(self.device)
            scores, truth = scores[keep], truth[keep]
        counts = histogram_counts(scores, truth)
        self.bg += counts[:N_BINS]
        self.fg += counts[N_BINS:]
        self.n_images += maps.shape[0]

    def merge(self, other: PixelHistogram) -> PixelHistogram:
        self._check_mergeable(other)
        self.fg += other.fg.to(self.fg.device)
        self.bg += other.bg.to(self.bg.device)
        self.n_images += other.n_images
        return self

    def sync(self) -> PixelHistogram:
        """Sum the counts over all processes of ``torch.distributed`` (no-op when not initialised)."""
        if distributed_ready():
            n = torch.tensor([self.n_images], dtype=torch.int64, device=self.fg.device)
            state = all_reduce_sum(torch.cat([self.fg, self.bg, n]))
            self.fg, self.bg = state[:N_BINS].clone(), state[N_BINS : 2 * N_BINS].clone()
            self.n_images = int(state[-1])
        return self

    @property
    def pxap(self) -> float | None:
        """PxAP of the pixels so far, None without foreground pixels."""
        from histocam.metrics.pxap import pxap_from_histograms

        if int(self.fg.sum()) == 0:
            return None
        return pxap_from_histograms(self.fg.cpu().numpy(), self.bg.cpu().numpy())

    def compute(self) -> dict:
        """Counts per bin (``EDGES``), totals and PxAP (None when there is no foreground pixel)."""
        from histocam.metrics.pxap import pxap_from_histograms

        fg, bg = self.fg.cpu(), self.bg.cpu()
        n_fg = int(fg.sum())
        return {
            "pxap": pxap_from_histograms(fg.numpy(), bg.numpy()) if n_fg else None,
            "n_images": self.n_images, "n_fg_pixels": n_fg, "n_bg_pixels": int(bg.sum()),
            "fg_counts": fg.tolist(), "bg_counts": bg.tolist(),
        }

    def counts(self) -> dict[str, np.ndarray]:
        """tp, fp, fn, tn at each threshold of ``THRESHOLDS`` (float64 arrays of length 1000)."""
        fg = self.fg.double().cpu().numpy()
        bg = self.bg.double().cpu().numpy()
        tp = fg[::-1].cumsum()[::-1][: THRESHOLDS.size]  # pixels with score >= τ
        fp = bg[::-1].cumsum()[::-1][: THRESHOLDS.size]
        return {"tp": tp, "fp": fp, "fn": fg.sum() - tp, "tn": bg.sum() - fp}
