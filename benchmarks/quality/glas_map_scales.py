"""Inference-time levers on the GlaS folds, at the runs' own checkpoints: the map's input scales
(``method.map_scales``) and the mean map of a fold's seeds (an ensemble of the runs of one config).

For every fold and seed of the given cross-validation folders (``histocam crossval``), the folder's
own map (the model, or a pipeline's student) is made again from its B-LOC checkpoint, chosen by the
run's own selection at scale 1, with each set of input scales on top of the run's test-time views
(``histocam.maps.views``); with ``--ensemble`` the maps of a fold's seeds are also averaged image by
image (one map per fold: three trainings and three passes per image). That mean is the plain mean
of the runs' maps: for probability maps (PixelCAM) it is the map of ``histocam ensemble``, for
min–max maps (LayerCAM) that map before ``histocam ensemble`` normalises it again. Each is scored on valpx,
what a lever is chosen on, and on the test fold, which is only reported.

One row per folder, scale set and kind (one seed's runs, or the seeds' mean map): valpx PxAP over
folds and its difference to one run at scale 1 (the choice), test PxAP over folds and over runs with
chance and the colour floor, and per seed the paired t-test of per-image AP against one run at
scale 1 and against the darkness map. Each result is kept under ``--out``
(``<folder>/fold<f>-<s0,s1,...>-<scales>.json``) and reused; nothing is written under the runs.

Usage (docs/results.md, "Input scales and seed ensembles"):
  python benchmarks/quality/glas_map_scales.py runs/cv/layercam runs/cv/pixelcam-layercam \\
      --scales 1.0 1.0,1.5 --ensemble --out runs/cv/inference
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from glas_crossval import darkness_per_image, floors
from tables import mean_std

from histocam.core.atomic import write_text_atomic
from histocam.core.experiment_results import CrossvalResult
from histocam.core.rundir import runs_in
from histocam.core.studydirs import CrossvalDir
from histocam.data.open import open_source
from histocam.metrics.histogram import PixelHistogram
from histocam.metrics.per_image import PerImageScores
from histocam.metrics.protocol import Batch
from histocam.metrics.stats import paired_ttest
from histocam.runs import Run
from histocam.train.split_pass import evaluate_split

SPLITS = ("valpx", "test")


class KeptMaps(PixelHistogram):
    """PxAP's histograms, which also keep every annotated image's map and mask (CPU)."""

    def reset(self) -> None:
        super().reset()
        self.kept: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, batch: Batch) -> None:
        super().update(batch)
        b = batch.localized
        for image_id, m, mask in zip(b.ids, b.maps.cpu(), b.masks.cpu()):
            self.kept[image_id] = (m.clone(), mask.bool().clone())


def maps_of(run: Run, scales: tuple[float, ...], split: str) -> dict[str, tuple]:
    """Every annotated image of ``split``: (map, mask) of the B-LOC checkpoint over ``scales``."""
    method, _ = run.method("best-loc", "cpu")
    method.config = method.config.model_copy(update={"map_scales": scales})
    kept = KeptMaps("cpu")
    evaluate_split(method, open_source(run.config.data).dataset(split), run.config.data,
                   torch.device("cpu"), {"maps": kept},
                   batch_size=run.config.train.eval_batch_size)
    return kept.kept


def score(maps: dict[str, tuple]) -> dict:
    """PxAP and per-image AP of ``maps`` (id -> (map, mask)), with the library's metrics."""
    pixels, images = PixelHistogram("cpu"), PerImageScores()
    for image_id, (m, mask) in maps.items():
        batch = Batch(ids=[image_id], labels=torch.zeros(1, dtype=torch.long), maps=m[None],
                      masks=mask[None], annotated=torch.ones(1, dtype=torch.bool))
        pixels.update(batch)
        images.update(batch)
    return {"pxap": pixels.compute()["pxap"],
            "image_ap": {r["id"]: r["ap"] for r in images.rows}}


def mean_maps(runs: list[dict[str, tuple]]) -> dict[str, tuple]:
    """The image-by-image mean of several runs' maps of the same images."""
    return {i: (sum(r[i][0] for r in runs) / len(runs), runs[0][i][1]) for i in runs[0]}


def fold_results(folder: Path, fold: int, seeds: list[int], scales: tuple[float, ...],
                 ensemble: bool, out: Path) -> dict[str, dict]:
    """``{"s<seed>": result, ..., "ensemble": result}`` of one fold, each result
    ``{split: {"pxap", "image_ap"}}`` (PxAP, per-image AP by id); kept in ``out`` and reused."""
    tag = "_".join(f"{s:g}" for s in scales)
    cache = out / folder.name / f"fold{fold}-s{','.join(map(str, seeds))}-{tag}.json"
    if cache.is_file():
        found = json.loads(cache.read_text())
        if not ensemble or "ensemble" in found:
            return found
    results, kept = {}, {split: [] for split in SPLITS}
    for seed in seeds:
        run = Run(runs_in(CrossvalDir(folder).fold(fold, seed))[-1].root)
        results[f"s{seed}"] = {}
        for split in SPLITS:
            maps = maps_of(run, scales, split)
            results[f"s{seed}"][split] = score(maps)
            if ensemble:
                kept[split].append(maps)
        print(f"{run.dir.root} scales {tag}: valpx {results[f's{seed}']['valpx']['pxap']:.1f}, "
              f"test {results[f's{seed}']['test']['pxap']:.1f}", flush=True)
    if ensemble:
        results["ensemble"] = {split: score(mean_maps(kept[split])) for split in SPLITS}
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cache, json.dumps(results))
    return results


def paired(per_fold: list[dict], reference: list[dict], seeds: list[str]) -> tuple[str, int, int]:
    """Per seed (``seeds``: result keys, or "ensemble"), the per-image test AP minus the reference
    maps' (``reference[fold]``: id -> AP): mean difference, p, n; and the images above, of all."""
    tests, above, total = [], 0, 0
    for key in seeds:
        ap = {i: v for fold in per_fold for i, v in fold[key]["test"]["image_ap"].items()}
        ref = {i: v for fold in reference for i, v in fold.items()}
        shared = sorted(i for i in set(ap) & set(ref) if ap[i] == ap[i] and ref[i] == ref[i])
        t = paired_ttest([ref[i] for i in shared], [ap[i] for i in shared])
        tests.append(f"{t.mean_difference:+.1f}, {t.p:.2g} ({t.n})")
        above += sum(ap[i] > ref[i] for i in shared)
        total += len(shared)
    return "; ".join(tests), above, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--scales", nargs="+", default=["1.0", "1.0,1.5"],
                        help="sets of scales, each comma-separated; the first is the reference")
    parser.add_argument("--ensemble", action="store_true",
                        help="also the mean map of each fold's seeds")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sets = [tuple(float(s) for s in text.split(",")) for text in args.scales]
    print("| folder | scales | maps | valpx PxAP | Δ valpx | test PxAP over folds | over runs (n) | "
          "chance | colour floor | − floor | per seed: per-image Δ vs one run at "
          f"{', '.join(f'{s:g}' for s in sets[0])}, p (n) | per seed: per-image Δ vs darkness map, "
          "p (n) | images above the darkness map |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for folder in args.folders:
        summary = CrossvalResult.read(CrossvalDir(folder).summary_json)
        if summary is None:
            raise SystemExit(f"{folder}: no crossval.json (run histocam crossval first)")
        chance, floor = floors(summary)
        darkness = darkness_per_image(folder)
        seeds = [f"s{s}" for s in summary.seeds]
        folds = {scales: [fold_results(folder, f, summary.seeds, scales, args.ensemble, args.out)
                          for f in range(summary.folds)] for scales in sets}
        reference = folds[sets[0]]
        for scales, per_fold in folds.items():
            for kind in ["runs", "ensemble"] if args.ensemble and len(seeds) > 1 else ["runs"]:
                keys = seeds if kind == "runs" else ["ensemble"]

                def fold_mean(split: str, results: list[dict], keys=keys) -> list[float]:
                    return [statistics.mean(r[k][split]["pxap"] for k in keys) for r in results]

                valpx, test = fold_mean("valpx", per_fold), fold_mean("test", per_fold)
                delta = [a - b for a, b in zip(valpx, fold_mean("valpx", reference, seeds))]
                runs = [r[k]["test"]["pxap"] for r in per_fold for k in keys]
                vs_ref = "—" if (scales, kind) == (sets[0], "runs") else "; ".join(
                    paired(per_fold, [r[s]["test"]["image_ap"] for r in reference], [k])[0]
                    for s, k in zip(seeds, keys * len(seeds) if kind == "ensemble" else keys))
                vs_dark, above, total = paired(per_fold, [darkness] * len(per_fold), keys)
                label = "one seed's run" if kind == "runs" else f"mean of {len(seeds)} seeds' maps"
                print(f"| {folder.name} | {', '.join(f'{s:g}' for s in scales)} | {label} | "
                      f"{mean_std(valpx)} | {mean_std(delta)} | {mean_std(test)} | "
                      f"{mean_std(runs)} ({len(runs)}) | {chance:.1f} | {floor:.1f} | "
                      f"{statistics.mean(test) - floor:+.1f} | {vs_ref} | {vs_dark} | "
                      f"{above} of {total} |", flush=True)


if __name__ == "__main__":
    main()
