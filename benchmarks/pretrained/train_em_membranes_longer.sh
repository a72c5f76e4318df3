#!/usr/bin/env bash
# A longer em-membranes run, for docs/models.md: 800 more iterations fine-tuned from the end of
# train_em_membranes.sh (1600 in all; a fresh Adam at a lower rate, cosine again).
# Usage: bash benchmarks/pretrained/train_em_membranes_longer.sh [OUT_DIR]  (after train_em_membranes.sh)
set -euo pipefail
OUT="${1:-/tmp/pretrained}"
SPLIT="${ISBI_SPLIT:-/tmp/isbi_split}"
OMP_NUM_THREADS=1 napari-unet train \
  --images "$SPLIT/train/images" --labels "$SPLIT/train/labels" \
  --val-images "$SPLIT/val/images" --val-labels "$SPLIT/val/labels" --binary-labels \
  --out "$OUT/em-membranes-1600.safetensors" --overwrite \
  --resume "$OUT/em-membranes.last.safetensors" --classes 2 \
  --iterations 800 --tile 572 --batch-size 1 --optimizer adam --lr 0.0003 --schedule cosine \
  --val-every 200 --device cpu --seed 1
