#!/usr/bin/env bash
# Reproduce src/napari_unet/models/pretrained/em-membranes.safetensors (see docs/models.md).
# Usage: bash benchmarks/pretrained/train_em_membranes.sh [OUT_DIR]   (default /tmp/pretrained)
# ISBI 2012 slices 00-19 train, 20-24 validate; the script links them into two folders.
set -euo pipefail
OUT="${1:-/tmp/pretrained}"
ISBI="${ISBI:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/data/isbi2012}"
SPLIT="${ISBI_SPLIT:-/tmp/isbi_split}"
mkdir -p "$OUT"
for part in train val; do mkdir -p "$SPLIT/$part/images" "$SPLIT/$part/labels"; done
for i in $(seq -w 0 24); do
  part=train; if [ "$((10#$i))" -ge 20 ]; then part=val; fi
  ln -sf "$ISBI/images/slice_$i.png" "$SPLIT/$part/images/slice_$i.png"
  ln -sf "$ISBI/labels/slice_$i.png" "$SPLIT/$part/labels/slice_$i.png"
done
OMP_NUM_THREADS=1 napari-unet train \
  --images "$SPLIT/train/images" --labels "$SPLIT/train/labels" \
  --val-images "$SPLIT/val/images" --val-labels "$SPLIT/val/labels" --binary-labels \
  --out "$OUT/em-membranes.safetensors" --overwrite \
  --model unet --depth 4 --base-channels 16 --padding valid --classes 2 \
  --iterations 800 --tile 572 --batch-size 1 --optimizer adam --lr 0.001 --schedule cosine \
  --val-every 200 --device cpu --seed 0
