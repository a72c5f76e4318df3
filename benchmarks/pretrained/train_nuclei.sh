#!/usr/bin/env bash
# Reproduce src/napari_unet/models/pretrained/nuclei.safetensors (see docs/models.md).
# Usage: bash benchmarks/pretrained/train_nuclei.sh [OUT_DIR]   (default /tmp/pretrained)
# One CPU thread: on a shared 2-core machine two threads per run were 2-5x slower;
# the thread count also fixes the floating-point summation order (bit-identical reruns).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:-/tmp/pretrained}"
DATA="${DSB_GREY:-/tmp/dsb_grey}"
mkdir -p "$OUT"
python "$HERE/prepare_dsb.py" --out "$DATA"
OMP_NUM_THREADS=1 napari-unet train \
  --images "$DATA/train/images" --labels "$DATA/train/labels" \
  --val-images "$DATA/val/images" --val-labels "$DATA/val/labels" \
  --out "$OUT/nuclei.safetensors" --overwrite \
  --model unet --depth 4 --base-channels 8 --padding same --batch-norm --classes 3 \
  --iterations 1800 --tile 256 --batch-size 4 --optimizer adam --lr 0.001 --schedule cosine \
  --val-every 300 --device cpu --seed 0
