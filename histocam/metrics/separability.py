"""Foreground/background class separability index J of pixel features (PixelCAM App. D, eqs. 4–6).

Our definition (no public code exists; stated with every J we print): for one image, the encoder's
last feature map F (d×h×w) gives one vector per feature-grid cell; cells are labelled foreground
when at least half of the pixels they cover are foreground in the mask (area-average downsampling
of the mask to h×w, then ≥ 0.5). With S_W = Σ_c Σ_j (x − m_c)(x − m_c)ᵀ and
S_B = Σ_c n_c (m_c − m)(m_c − m)ᵀ (Duda et al.), J = tr(S_B) / tr(S_W). Only traces are needed:
tr(S_W) = Σ_c Σ_j ‖x − m_c‖², tr(S_B) = Σ_c n_c ‖m_c − m‖². Images whose grid has a single class are
skipped.

``SeparabilityIndex`` keeps (class, J) per image in ``update`` order; ``merge`` appends and ``sync``
concatenates the ranks' values in rank order (``histocam.metrics.protocol``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from histocam.core.results import Histogram, Separability
from histocam.metrics.protocol import Batch, Metric

DEFINITION = ("J = tr(S_B)/tr(S_W) per image over encoder feature-grid cells labelled FG when ≥ 50% "
              "of their pixels are FG (PixelCAM App. D; grid-level labelling is histocam's choice)")


def separability_index(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """J for each image of a batch: ``features`` B×d×h×w, ``masks`` B×H×W. NaN = single class."""
    b, d, h, w = features.shape
    grid = F.adaptive_avg_pool2d(masks.float()[:, None], (h, w))[:, 0] >= 0.5
    x = features.double().reshape(b, d, h * w).transpose(1, 2)  # B×N×d
    fg = grid.reshape(b, h * w, 1).double()
    bg = 1.0 - fg
    n_fg, n_bg = fg.sum(1), bg.sum(1)  # B×1
    m = x.mean(1)
    m_fg = (x * fg).sum(1) / n_fg.clamp(min=1)
    m_bg = (x * bg).sum(1) / n_bg.clamp(min=1)
    within = (((x - m_fg[:, None]) ** 2).sum(-1, keepdim=True) * fg).sum((1, 2)) + \
             (((x - m_bg[:, None]) ** 2).sum(-1, keepdim=True) * bg).sum((1, 2))
    between = n_fg[:, 0] * ((m_fg - m) ** 2).sum(-1) + n_bg[:, 0] * ((m_bg - m) ** 2).sum(-1)
    j = between / within
    single = (n_fg[:, 0] == 0) | (n_bg[:, 0] == 0)
    return torch.where(single, torch.full_like(j, float("nan")), j)


class SeparabilityIndex(Metric):
    """Collects J per image with its class; ``compute`` gives means per class and a histogram."""

    def __init__(self, class_names: list[str]) -> None:
        self.class_names = list(class_names)
        self.reset()

    def reset(self) -> None:
        self.values: list[tuple[int, float]] = []

    def merge(self, other: SeparabilityIndex) -> SeparabilityIndex:
        """Append ``other``'s (class, J) values after this instance's (same class names required)."""
        self._check_mergeable(other, class_names=self.class_names)
        self.values.extend(other.values)
        return self

    needs = frozenset({"features"})

    def update(self, batch: Batch) -> None:
        """J of each annotated image of the batch (its ``features``, ``masks`` and ``labels``)."""
        b = batch.localized
        b.require(self, "features", "masks", "labels")
        if not len(b.features):
            return
        j = separability_index(b.features, b.masks).cpu().numpy()
        self.values.extend((int(y), float(v)) for y, v in zip(b.labels.cpu().tolist(), j))

    def compute(self, bins: int = 20) -> Separability:
        valid = [(y, v) for y, v in self.values if not np.isnan(v)]
        arr = np.array([v for _, v in valid]) if valid else np.zeros(0)
        per_class = {}
        for c, name in enumerate(self.class_names):
            vals = [v for y, v in valid if y == c]
            per_class[name] = float(np.mean(vals)) if vals else None
        counts, edges = np.histogram(arr, bins=bins) if arr.size else (np.zeros(0), np.zeros(0))
        return Separability(
            definition=DEFINITION, mean=float(arr.mean()) if arr.size else None,
            per_class=per_class, n_images=int(arr.size),
            n_skipped_single_class=len(self.values) - len(valid),
            histogram=Histogram(counts=counts.tolist(), edges=edges.tolist()))
