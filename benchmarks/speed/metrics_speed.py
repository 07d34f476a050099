"""Evaluation speed: 15,664 maps of 224×224 (CAMELYON16-512 test size) with masks.

Ours: ``PixelHistogram`` per batch (one bincount), then PxAP + area rates + Dice/IoU at τ.
Reference approach: per-image ``np.histogram`` of foreground and background scores, as the
reference evaluator (wsolevaluation) does, then the same formulas. Both see the same maps; map
generation is not timed. Each approach runs in its own subprocess to report its own peak RSS.

Usage: python benchmarks/speed/metrics_speed.py [--n 15664] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def batches(n: int, batch: int, size: int = 224):
    g = torch.Generator().manual_seed(0)
    for start in range(0, n, batch):
        b = min(batch, n - start)
        masks = torch.rand(b, size // 8, size // 8, generator=g) < 0.4
        masks = torch.nn.functional.interpolate(masks[:, None].float(), (size, size))[:, 0] > 0.5
        masks[::7] = False  # fully negative images, as CAMELYON normals
        maps = (0.35 * masks + 0.65 * torch.rand(b, size, size, generator=g)).clamp_(0, 1)
        yield maps, masks


def run_ours(n: int, batch: int) -> dict:
    from histocam.metrics import Batch, PixelHistogram
    from histocam.metrics.localization import localization_report

    hist = PixelHistogram()
    elapsed = 0.0
    for maps, masks in batches(n, batch):
        t = time.perf_counter()
        hist.update(Batch(maps=maps, masks=masks))
        elapsed += time.perf_counter() - t
    t = time.perf_counter()
    report = localization_report(hist)
    elapsed += time.perf_counter() - t
    return {"seconds": elapsed, "pxap": report.pxap, "TP*": report.tp_area,
            "dice_fg@0.5": report.at_half.dice_fg}


def run_reference(n: int, batch: int) -> dict:
    from histocam.metrics.histogram import EDGES, THRESHOLDS

    fg_hist = np.zeros(EDGES.size - 1)
    bg_hist = np.zeros(EDGES.size - 1)
    elapsed = 0.0
    for maps, masks in batches(n, batch):
        maps_np, masks_np = maps.numpy(), masks.numpy()
        t = time.perf_counter()
        for m, k in zip(maps_np, masks_np):
            fg_hist += np.histogram(m[k], bins=EDGES)[0]
            bg_hist += np.histogram(m[~k], bins=EDGES)[0]
        elapsed += time.perf_counter() - t
    t = time.perf_counter()
    tp, fp = fg_hist[::-1].cumsum(), bg_hist[::-1].cumsum()
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = tp / fg_hist.sum()
    pxap = 100 * (precision[1:] * np.diff(recall)).sum()
    tp_t = tp[::-1][: THRESHOLDS.size]
    fp_t = fp[::-1][: THRESHOLDS.size]
    i = 500
    fn = fg_hist.sum() - tp_t[i]
    dice = 100 * 2 * tp_t[i] / (2 * tp_t[i] + fp_t[i] + fn)
    tp_star = 100 * (tp_t / fg_hist.sum()).mean()
    elapsed += time.perf_counter() - t
    return {"seconds": elapsed, "pxap": pxap, "TP*": tp_star, "dice_fg@0.5": dice}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=15664)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--mode", choices=["ours", "reference"], default=None)
    args = parser.parse_args()
    if args.mode:
        out = (run_ours if args.mode == "ours" else run_reference)(args.n, args.batch)
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return
    print(f"{args.n} maps 224x224, batch {args.batch}, torch threads {torch.get_num_threads()}")
    results = {}
    for mode in ("ours", "reference"):
        proc = subprocess.run([sys.executable, __file__, "--mode", mode, "--n", str(args.n),
                               "--batch", str(args.batch)], capture_output=True, text=True,
                              check=True)
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[mode]
        print(f"{mode:>9}: {r['seconds']:.2f} s ({args.n / r['seconds']:.0f} maps/s), peak RSS "
              f"{r['peak_rss_mb']:.0f} MB, PxAP {r['pxap']:.6f}, TP* {r['TP*']:.4f}, "
              f"Dice+@0.5 {r['dice_fg@0.5']:.4f}")
    ratio = results["reference"]["seconds"] / results["ours"]["seconds"]
    same = abs(results["reference"]["pxap"] - results["ours"]["pxap"]) < 1e-6
    print(f"speed-up ours vs reference: {ratio:.1f}x (target >= 10x); identical PxAP: {same}")


if __name__ == "__main__":
    main()
