"""Where the report finds what evaluations and experiments wrote under a run directory.

``RUN/metrics/<ckpt>-<split>.json`` (+ ``-per-image.csv``, ``-curves.csv``, ``-maps.npz``) come
from ``histocam.runs.evaluation``; ``RUN/metrics/<TAG>/`` holds the same for other data (OOD). The
experiments (``histocam.experiments``) write one JSON each, named here so that writer and reader
share the names.
"""

from __future__ import annotations

from pathlib import Path

SELECTED = ("best-loc", "best-cl")
LABEL = {"best-loc": "B-LOC", "best-cl": "B-CL", "last": "last"}
STAIN_SHIFT = "stain-shift.json"
TSNE = "tsne.json"
THRESHOLDS = "thresholds.json"


def metrics_dir(run_dir: Path, tag: str | None = None) -> Path:
    return Path(run_dir) / "metrics" / (tag or "")


def metrics_json(run_dir: Path, checkpoint: str, split: str = "test", tag: str | None = None) -> Path:
    return metrics_dir(run_dir, tag) / f"{checkpoint}-{split}.json"


def per_image_csv(run_dir: Path, checkpoint: str, split: str = "test", tag: str | None = None) -> Path:
    return metrics_dir(run_dir, tag) / f"{checkpoint}-{split}-per-image.csv"


def curves_csv(run_dir: Path, checkpoint: str, split: str = "test", tag: str | None = None) -> Path:
    return metrics_dir(run_dir, tag) / f"{checkpoint}-{split}-curves.csv"


def maps_npz(run_dir: Path, checkpoint: str, split: str = "test", tag: str | None = None) -> Path:
    return metrics_dir(run_dir, tag) / f"{checkpoint}-{split}-maps.npz"


def experiment_json(run_dir: Path, name: str) -> Path:
    """``RUN/metrics/<name>`` for one of STAIN_SHIFT, TSNE, THRESHOLDS."""
    return metrics_dir(run_dir) / name
