"""What a run directory holds, read once for the report: config, training log, test metrics at
both selected checkpoints (JSON, per-image CSV, threshold curves), evaluations on other data and
the experiments' JSON files. Nothing is recomputed here."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from histocam.report import files
from histocam.runs.run import Run, RunError


@dataclass
class CheckpointResults:
    checkpoint: str
    metrics: dict
    per_image: list[dict]  # id, label (int), ap, dice_fg, ... (floats, NaN when empty)
    curves: dict[str, np.ndarray] | None
    maps: Path | None  # stored maps of the evaluation (``--save-maps``), when present

    @property
    def localization(self) -> dict:
        return self.metrics.get("localization", {})

    @property
    def tau_star(self) -> float | None:
        return self.localization.get("tau_star_valpx")

    def scores(self, key: str = "ap") -> dict[str, float]:
        """image id -> per-image score (NaN kept)."""
        return {r["id"]: r[key] for r in self.per_image if key in r}


@dataclass
class OtherData:
    tag: str
    checkpoint: str
    metrics: dict


@dataclass
class RunResults:
    run: Run
    config_text: str
    log: list[dict]
    test: dict[str, CheckpointResults] = field(default_factory=dict)
    other_data: list[OtherData] = field(default_factory=list)
    experiments: dict[str, dict] = field(default_factory=dict)  # file name -> content

    @property
    def name(self) -> str:
        return self.run.dir.name

    @property
    def method(self) -> str:
        return self.run.config.method.name

    def selected_epoch(self, which: str) -> int | None:
        """The epoch selected as B-LOC or B-CL: the last log row that saved it."""
        found = None
        for row in self.log:
            if which in (row.get("selected") or "").split("+"):
                found = int(row["epoch"])
        return found


def _float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def read_per_image(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            parsed = {k: _float(v) for k, v in row.items() if k != "id"}
            parsed["id"] = row["id"]
            parsed["label"] = int(parsed["label"]) if parsed.get("label") == parsed.get("label") \
                else -1
            rows.append(parsed)
    return rows


def read_curves(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    return {k: np.array([_float(r[k]) for r in rows]) for k in rows[0]}


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None


def load_results(directory: str | Path, split: str = "test") -> RunResults:
    run = Run(directory)
    log_path = run.dir / "log.csv"
    log: list[dict] = []
    if log_path.is_file():
        with log_path.open(newline="") as fh:
            log = list(csv.DictReader(fh))
    results = RunResults(run, (run.dir / "config.yaml").read_text(), log)
    for ckpt in files.SELECTED:
        metrics = read_json(files.metrics_json(run.dir, ckpt, split))
        if metrics is None:
            continue
        maps = files.maps_npz(run.dir, ckpt, split)
        results.test[ckpt] = CheckpointResults(
            ckpt, metrics, read_per_image(files.per_image_csv(run.dir, ckpt, split)),
            read_curves(files.curves_csv(run.dir, ckpt, split)), maps if maps.is_file() else None)
    metrics_root = files.metrics_dir(run.dir)
    if metrics_root.is_dir():
        for tag_dir in sorted(p for p in metrics_root.iterdir() if p.is_dir()):
            for ckpt in files.SELECTED:
                other = read_json(files.metrics_json(run.dir, ckpt, split, tag_dir.name))
                if other is not None:
                    results.other_data.append(OtherData(tag_dir.name, ckpt, other))
    for name in (files.STAIN_SHIFT, files.TSNE, files.THRESHOLDS):
        content = read_json(files.experiment_json(run.dir, name))
        if content is not None:
            results.experiments[name] = content
    return results


def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories among ``paths``; a folder that is not a run but holds runs (a pipeline's
    root, e.g. the demo's) stands for its runs, in name order."""
    out: list[Path] = []
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise RunError(f"{path}: no such run directory")
        if (path / "config.yaml").is_file():
            out.append(path)
            continue
        inner = sorted(p for p in path.iterdir() if (p / "config.yaml").is_file())
        if not inner:
            raise RunError(f"{path}: not a run directory (no config.yaml) and holds no runs")
        out.extend(inner)
    return out
