#!/usr/bin/env bash
# Second stage of the nuclei model: 1800 more iterations fine-tuned from the end of
# train_nuclei.sh (3600 in all; a fresh Adam at a lower rate, cosine again).
# Usage: bash benchmarks/pretrained/train_nuclei_longer.sh [OUT_DIR]   (after train_nuclei.sh)
set -euo pipefail
OUT="${1:-/tmp/pretrained}"
DATA="${DSB_GREY:-/tmp/dsb_grey}"
OMP_NUM_THREADS=1 napari-unet train \
  --images "$DATA/train/images" --labels "$DATA/train/labels" \
  --val-images "$DATA/val/images" --val-labels "$DATA/val/labels" \
  --out "$OUT/nuclei-3600.safetensors" --overwrite \
  --resume "$OUT/nuclei.last.safetensors" --classes 3 \
  --iterations 1800 --tile 256 --batch-size 4 --optimizer adam --lr 0.0003 --schedule cosine \
  --val-every 600 --device cpu --seed 1
