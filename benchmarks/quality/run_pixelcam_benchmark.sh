#!/usr/bin/env bash
# The PixelCAM-vs-teacher benchmark as recorded in docs/results.md: four teachers x 3 seeds
# on synthetic-colon, GlaS and synthetic-node (CPU-2, about 2.5 hours; finished runs are reused).
set -euo pipefail
bash benchmarks/quality/train_teachers.sh "cam deepmil gradcampp layercam" "colon glas node" "0 1 2"
for dataset in colon glas node; do
  python benchmarks/quality/pixelcam_vs_teacher.py --dataset "$dataset" --seeds 0 1 2 \
    | tee "runs/exp/pixelcam-$dataset.md"
done
