#!/usr/bin/env bash
# The PixelCAM-vs-teacher benchmark as recorded in benchmarks/RESULTS.md (CPU, ~110 minutes).
set -euo pipefail
bash benchmarks/train_teachers.sh "cam deepmil gradcampp layercam" "colon glas" "0 1 2"
bash benchmarks/train_teachers.sh "cam deepmil gradcampp layercam" "node" "0 1 2"
python benchmarks/pixelcam_vs_teacher.py --dataset colon --teachers cam deepmil --seeds 0 1 2 \
  | tee runs/exp/pixelcam-colon.md
python benchmarks/pixelcam_vs_teacher.py --dataset glas --teachers cam deepmil --seeds 0 1 2 \
  | tee runs/exp/pixelcam-glas.md
python benchmarks/pixelcam_vs_teacher.py --dataset node --seeds 0 1 2 \
  | tee runs/exp/pixelcam-node.md
