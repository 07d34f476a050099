"""Time ``histocam report`` on 10 runs of 120 test images and measure the file (the target:
under 30 s on 2 cores, under 20 MB).

The 10 runs are copies of one trained run (its checkpoints hard-linked, its metrics and experiment
results copied), so every run has the same content as a real one: test metrics at both
checkpoints, curves, per-image APs, and whichever experiments (stain shift, t-SNE, thresholds) the
source run holds. Prints wall and CPU seconds of ``build_report`` and the file size.

Usage: python benchmarks/speed/report_speed.py RUN [--copies 10]
  e.g. RUN = runs/exp/node/cam-s0 after benchmarks/quality/robustness.py (120 test tiles, stain shift)
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from histocam.report import build_report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--copies", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for i in range(args.copies):
            dst = Path(tmp) / f"{args.run.name}-copy{i}"
            shutil.copytree(args.run, dst, copy_function=os.link)
            runs.append(dst)
        out = Path(tmp) / "report.html"
        wall, cpu = time.perf_counter(), time.process_time()
        build_report(runs, out)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        size = out.stat().st_size / 2**20
    print(f"histocam report, {args.copies} runs of {args.run}: {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(this process), {size:.1f} MB (targets: < 30 s on 2 cores, < 20 MB)")


if __name__ == "__main__":
    main()
