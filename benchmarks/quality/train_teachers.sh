#!/usr/bin/env bash
# Train the teacher/baseline runs used by benchmarks/quality/pixelcam_vs_teacher.py (skips finished runs).
# Usage: bash benchmarks/quality/train_teachers.sh "cam deepmil" "colon glas" "0 1 2"
set -euo pipefail
methods=${1:-"cam deepmil gradcampp layercam"}
datasets=${2:-"colon glas"}
seeds=${3:-"0 1 2"}
for dataset in $datasets; do
  for seed in $seeds; do
    for method in $methods; do
      name="$method-s$seed"
      out=$(python -c "import yaml;print(yaml.safe_load(open('benchmarks/configs/$dataset.yaml'))['out_dir'])")
      if [ -f "$out/$name/checkpoints/last.pt" ]; then echo "skip $dataset/$name"; continue; fi
      histocam train -c "benchmarks/configs/$dataset.yaml" name="$name" seed="$seed" \
        method.name="$method"
    done
  done
done
