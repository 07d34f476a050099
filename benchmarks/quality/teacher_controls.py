"""PixelCAM from replaced teacher maps: what the student's localization owes to its teacher.

A PixelCAM student learns its pixel head from pseudo-labels sampled out of the teacher's stored maps
of the train images (PixelCAM eq. 3). A control trains the same student (same config, the same
teacher weights as its start, same seed) from a replacement of those maps:

- ``permuted`` (the uninformative teacher): the teacher's maps given to the wrong images, permuted
  among the train images with none left on its own image (a derangement drawn from ``--seed``).
  The maps keep their shapes and statistics; only their relation to the image is gone. A student
  that localizes as well from them learns its localization from something else than the maps (the
  encoder it starts from, the image loss, the checkpoint choice on valpx);
- ``darkness`` (a colour teacher): each image's darkness map (1 − mean RGB, the colour floor of
  ``histocam.maps.colour``) at the evaluation size, averaged onto the grid of the teacher's maps and
  min–max normalised as stored maps are. A student that does as well from it needs no trained
  teacher at all.

For every fold of a PixelCAM cross-validation folder (``histocam crossval`` of a pipeline config;
``benchmarks/quality/glas_crossval.sh``), it:

1. writes the replaced store ``OUT/fold<f>-s<seed>/<control>-maps.npz`` with the teacher store's
   provenance, so that it is accepted for the same split (kept if it exists);
2. trains ``OUT/fold<f>-s<seed>/student`` with the student's own resolved config and ``cams`` set to
   that store (``histocam train``; a stopped run is resumed, a finished one reused);
3. evaluates its B-LOC checkpoint on the fold's test split (``histocam evaluate``).

Then it prints, as markdown, test PxAP at B-LOC per fold for the teacher, the student, the control
student and the colour floor, and the paired t-tests of the control's per-image AP over every image
of the folds against the student's, the teacher's and the darkness map's.

Steps 2 and 3 run ``histocam`` as a command, so a control can be trained with the same code as the
student it is compared with (``PYTHONPATH``); ``--only stores`` does step 1, ``--only train``
steps 1-3, ``--only report`` prints the tables.

Usage: python benchmarks/quality/teacher_controls.py runs/cv/pixelcam-layercam \\
           --control permuted --out runs/cv/controls/permuted-layercam [--seed 0] \\
           [--only stores|train|report]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import yaml

CONTROLS = ("permuted", "darkness")


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly drawn permutation of ``range(n)`` with no fixed point (rejection sampling)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    while True:
        order = rng.permutation(n)
        if not np.any(order == np.arange(n)):
            return order


def permuted_store(store: Path, out: Path, seed: int) -> Path:
    """Copy ``store`` (an ``.npz`` of maps and its ``.json`` provenance) to ``out`` with each
    image's map replaced by another image's (``derangement``); the provenance is kept and records
    the permutation."""
    meta = json.loads(store.with_suffix(".json").read_text())
    with zipfile.ZipFile(store) as src:
        names = sorted(src.namelist())
        order = derangement(len(names), np.random.default_rng(seed))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as dst:
            for name, other in zip(names, order):
                dst.writestr(name, src.read(names[other]))
    tmp.replace(out)
    meta["replaced"] = {"control": "permuted", "seed": seed, "from": str(store),
                        "map_of": {a: names[b] for a, b in zip(names, order)}}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return out


def darkness_on_grid(item: dict, grid: tuple[int, int]):
    """The darkness map of a transformed item's image (C×H×W in [0, 1]), averaged onto ``grid``
    and min–max normalised: 1×h×w."""
    import torch
    import torch.nn.functional as F

    from histocam.maps.colour import COLOUR_FLOOR, COLOUR_MAPS
    from histocam.maps.normalize import minmax_normalize

    rgb = item["image"].permute(1, 2, 0).double().numpy()
    dark = torch.from_numpy(COLOUR_MAPS[COLOUR_FLOOR](rgb).astype(np.float32))[None, None]
    return minmax_normalize(F.interpolate(dark, tuple(grid), mode="area")[:, 0], relu=False)


def darkness_store(store: Path, out: Path, run_dir: Path) -> Path:
    """A store of the darkness map of every image of ``store`` (the train split of the run in
    ``run_dir``), on the grid of ``store``'s maps, with ``store``'s provenance."""
    from histocam.data.open import open_source
    from histocam.data.transforms import JointTransform
    from histocam.maps.store import NpzWriter
    from histocam.runs import Run

    meta = json.loads(store.with_suffix(".json").read_text())
    with np.load(store) as npz:
        grid = npz[npz.files[0]].shape
    data = Run(run_dir).config.data
    dataset = open_source(data).dataset("train")
    if sorted(dataset.ids) != sorted(meta["ids"]):
        raise SystemExit(f"{store}: its images are not the train split of {run_dir}")
    transform = JointTransform.from_config(data, train=False)
    with NpzWriter(out) as writer:
        for k in range(len(dataset)):
            sample = dataset[k]
            cell = darkness_on_grid(transform(sample), grid)[0]
            writer.add(sample.id, cell.numpy().astype(np.float16))
    meta["replaced"] = {"control": "darkness", "from": str(store)}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return out


def student_config(fold_dir: Path) -> Path:
    """The resolved config of the one student run inside a pipeline's fold folder."""
    configs = sorted(fold_dir.glob("*/config.yaml"))
    if len(configs) != 1:
        raise SystemExit(f"{fold_dir}: expected one student run (a folder with config.yaml), "
                         f"found {len(configs)}")
    return configs[0]


def control_store(fold_dir: Path, out: Path, control: str, seed: int) -> Path:
    """Step 1 for one fold: the replaced store (made once)."""
    config_path = student_config(fold_dir)
    store, path = Path(yaml.safe_load(config_path.read_text())["cams"]), out / f"{control}-maps.npz"
    if path.is_file() and path.with_suffix(".json").is_file():
        return path
    if control == "permuted":
        return permuted_store(store, path, seed)
    return darkness_store(store, path, config_path.parent)


def run_histocam(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "histocam", *args], check=True)


def train_control(fold_dir: Path, out: Path, control: str, seed: int) -> Path:
    """Steps 1-3 for one fold; returns the control run's directory."""
    store = control_store(fold_dir, out, control, seed)
    config_path = student_config(fold_dir)
    epochs = yaml.safe_load(config_path.read_text())["train"]["epochs"]
    run = out / "student"
    if not (run / "metrics" / "best-loc-test.json").is_file():
        overrides = [f"name={run.name}", f"out_dir={out}", f"cams={store}"]
        if (run / "checkpoints" / "last.pt").is_file():
            with (run / "log.csv").open() as fh:
                last = max(int(row["epoch"]) for row in csv.DictReader(fh))
            if last < epochs:
                run_histocam("train", "-c", str(config_path), "--resume", *overrides)
        else:
            run_histocam("train", "-c", str(config_path), *overrides)
        run_histocam("evaluate", str(run), "--checkpoint", "best-loc", "--split", "test")
    return run


def report(student_dir: Path, out_root: Path, control: str, seed: int) -> list[str]:
    """Markdown: per fold and over the folds, test PxAP at B-LOC of teacher, student, control and
    colour floor, and the paired per-image tests of the control."""
    sys.path.insert(0, str(Path(__file__).parent))
    from glas_crossval import darkness_per_image
    from tables import mean_std

    from histocam.core.experiment_results import CrossvalResult
    from histocam.core.rundir import RunDir
    from histocam.core.studydirs import CrossvalDir
    from histocam.metrics.stats import paired_ttest

    summary = CrossvalResult.read(CrossvalDir(student_dir).summary_json)
    if summary is None:
        raise SystemExit(f"{student_dir}: no crossval.json (run histocam crossval first)")
    floor = darkness_per_image(student_dir)
    rows, ap = [], {"teacher": {}, "student": {}, "control": {}}
    for fold_dir in sorted(student_dir.glob(f"fold*-s{seed}")):
        config = yaml.safe_load(student_config(fold_dir).read_text())
        runs = {"teacher": RunDir(Path(config["init"]).parent.parent),
                "student": RunDir(student_config(fold_dir).parent),
                "control": RunDir(out_root / fold_dir.name / "student")}
        results = {role: run.read_evaluation("best-loc", "test") for role, run in runs.items()}
        missing = [str(runs[r]) for r, result in results.items() if result is None]
        if missing:
            raise SystemExit(f"no B-LOC test evaluation in {', '.join(missing)}")
        for role, result in results.items():
            ap[role].update({row.id: row.ap for row in result.per_image if row.ap is not None})
        fold = config["data"]["fold"]
        rows.append((fold, *(results[r].pxap for r in ap), summary.floors[fold].darkness))
    if not rows:
        raise SystemExit(f"{student_dir}: no fold folders of seed {seed}")
    what = {"permuted": "the teacher's maps permuted among the train images",
            "darkness": "the darkness map of each train image"}[control]
    lines = [f"Test PxAP at B-LOC, seed {seed} ({student_dir.name}; control: {what})", "",
             f"| fold | teacher | PixelCAM | PixelCAM, {control} maps | colour floor (darkness "
             "map) |", "|---|---|---|---|---|"]
    lines += [f"| {f} | {t:.1f} | {s:.1f} | {c:.1f} | {d:.1f} |" for f, t, s, c, d in rows]
    columns = list(zip(*rows))[1:]
    lines.append("| mean ± std | " + " | ".join(mean_std(list(c)) for c in columns) + " |")
    lines += ["", "| control − | per-image Δ | p | images where the control is above | n |",
              "|---|---|---|---|---|"]
    mine = ap["control"]
    for name, other in (("PixelCAM", ap["student"]), ("teacher", ap["teacher"]),
                        ("darkness map", floor)):
        shared = sorted(set(mine) & set(other))
        t = paired_ttest([other[i] for i in shared], [mine[i] for i in shared])
        above = sum(mine[i] > other[i] for i in shared)
        lines.append(f"| {name} | {t.mean_difference:+.1f} | {t.p:.2g} | {above} | {t.n} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("student", type=Path, help="crossval folder of a PixelCAM pipeline")
    parser.add_argument("--control", choices=CONTROLS, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder of the control runs")
    parser.add_argument("--seed", type=int, default=0, help="the runs' seed and the permutation's")
    parser.add_argument("--only", choices=("stores", "train", "report"),
                        help="only make the stores, only make them and train and evaluate the "
                        "controls, or only print the tables")
    args = parser.parse_args()
    if args.only != "report":
        folds = sorted(args.student.glob(f"fold*-s{args.seed}"))
        if not folds:
            raise SystemExit(f"{args.student}: no fold folders of seed {args.seed}")
        for fold_dir in folds:
            out = args.out / fold_dir.name
            if args.only == "stores":
                control_store(fold_dir, out, args.control, args.seed)
            else:
                train_control(fold_dir, out, args.control, args.seed)
    if args.only is None or args.only == "report":
        print("\n".join(report(args.student, args.out, args.control, args.seed)))


if __name__ == "__main__":
    main()
