"""Synthetic H&E generation speed on one CPU core, and the foreground-fraction distribution.

Usage: python benchmarks/speed/synthetic_speed.py [--n 200] [--size 256]
Target: >= 30 images/s at 256×256 on one core, per domain.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"  # one core: set before numpy is imported

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from histocam.data.config import SyntheticConfig  # noqa: E402
from histocam.data.synthetic import SyntheticSource  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          "one thread")
    config = SyntheticConfig(size=args.size, n_train=args.n)
    for domain in ("colon", "node"):
        ds = SyntheticSource(domain, config).dataset("train")
        ds[0]  # warm caches (interpolation weights, grids)
        start = time.perf_counter()
        fractions = {0: [], 1: []}
        for i in range(len(ds)):
            sample = ds[i]
            fractions[sample.label].append(float(sample.mask.mean()))
        rate = len(ds) / (time.perf_counter() - start)
        print(f"{domain}: {rate:.1f} images/s at {args.size}x{args.size} ({len(ds)} images)")
        for label, values in fractions.items():
            v = np.asarray(values)
            q = np.percentile(v, [0, 10, 50, 90, 100])
            print(f"  class {ds.class_names[label]:>9}: foreground fraction min {q[0]:.2f} "
                  f"p10 {q[1]:.2f} median {q[2]:.2f} p90 {q[3]:.2f} max {q[4]:.2f}")


if __name__ == "__main__":
    main()
