"""The slide-level label and score from its tiles (``histocam predict --aggregation``).

With a positive class (the run's data has a fully negative class, or ``--map-class`` names one):

- ``max``: score = the largest tile P(positive); positive when score ≥ 0.5. Any positive part makes
  the slide positive (the multiple-instance assumption), so one confident false-positive tile does
  too;
- ``topk`` (default): score = the mean of the ``k`` largest tile P(positive) (``--top-k``, default
  5); positive when score ≥ 0.5. A slide needs several confident tiles to be positive;
- ``area``: score = the fraction of the tissue inside the region at the threshold (after the
  region's smoothing and minimum area, ``histocam.wsi.maps.region_mask``); positive when the region
  is not empty. A score on the map rather than on the tiles' labels.

Without one (several classes, none negative): ``mean``, the class probabilities averaged over the
tiles weighted by their tissue fraction; the label is the most probable class and the score its
probability. ``auto`` is ``topk`` with a positive class and ``mean`` without.
"""

from __future__ import annotations

import heapq

import numpy as np

AGGREGATIONS = ("auto", "max", "topk", "area", "mean")
DEFAULT_TOP_K = 5


def resolve_aggregation(name: str, positive: int | None, top_k: int) -> str:
    """The rule to apply (module docstring); a ValueError when it cannot apply."""
    if name not in AGGREGATIONS:
        raise ValueError(f"--aggregation {name!r}: one of {', '.join(AGGREGATIONS)}")
    if top_k < 1:
        raise ValueError(f"--top-k {top_k}: must be at least 1")
    if name == "auto":
        return "topk" if positive is not None else "mean"
    if name != "mean" and positive is None:
        raise ValueError(f"--aggregation {name} needs a positive class: the run's data has no "
                         "fully negative class; pass --map-class CLASS, or --aggregation mean")
    return name


class SlideScore:
    """Accumulates the tiles' class probabilities; ``result`` applies the rule."""

    def __init__(self, class_names: list[str], rule: str, positive: int | None, top_k: int) -> None:
        self.names, self.rule, self.positive, self.top_k = class_names, rule, positive, top_k
        self.weighted = np.zeros(len(class_names))
        self.tissue = 0.0
        self.largest: list[float] = []  # a min-heap of the k largest P(positive)
        self.count = 0

    def add(self, probs: np.ndarray, tissue: float) -> None:
        self.weighted += tissue * probs.astype(np.float64)
        self.tissue += tissue
        self.count += 1
        if self.positive is not None:
            p = float(probs[self.positive])
            keep = self.top_k if self.rule == "topk" else 1
            if len(self.largest) < keep:
                heapq.heappush(self.largest, p)
            elif p > self.largest[0]:
                heapq.heapreplace(self.largest, p)

    def result(self, area_fraction: float | None = None) -> dict:
        """{label, score, aggregation, rule, probabilities} (module docstring)."""
        if self.count == 0 or self.tissue <= 0:
            return {"label": None, "score": None, "aggregation": self.rule,
                    "rule": "no tissue tile", "probabilities": None}
        mean = {c: float(v) for c, v in zip(self.names, self.weighted / self.tissue)}
        if self.rule == "mean":
            label = max(mean, key=mean.get)
            return {"label": label, "score": mean[label], "aggregation": "mean",
                    "rule": "tissue-weighted mean of the tiles' class probabilities",
                    "probabilities": mean}
        pos = self.names[self.positive]
        others = [c for c in self.names if c != pos]
        negative = others[0] if len(others) == 1 else "not " + pos
        if self.rule == "area":
            if area_fraction is None:
                raise ValueError("--aggregation area needs the region (a threshold: the run's τ*, "
                                 "or --threshold) and --regions")
            score = float(area_fraction)
            return {"label": pos if score > 0 else negative, "score": score, "aggregation": "area",
                    "rule": f"fraction of the tissue in the {pos} region; {pos} when not empty",
                    "probabilities": mean}
        if self.rule == "max":
            score = max(self.largest)
            rule = f"largest tile P({pos}); {pos} when ≥ 0.5"
        else:
            score = float(np.mean(self.largest))
            rule = f"mean of the {len(self.largest)} largest tile P({pos}); {pos} when ≥ 0.5"
        return {"label": pos if score >= 0.5 else negative, "score": float(score),
                "aggregation": self.rule, "rule": rule, "probabilities": mean}
