#!/usr/bin/env bash
# Measure the bundled models on their held-out data and write docs/models/*_validation.json.
# Usage (from the repository root): bash benchmarks/pretrained/evaluate.sh [NUCLEI_MODEL [EM_MODEL]]
# Defaults: the bundled files. Needs the data prepared by train_nuclei.sh / train_em_membranes.sh
# (or run `python benchmarks/pretrained/prepare_dsb.py --out /tmp/dsb_grey` first).
set -euo pipefail
PRE=src/napari_unet/models/pretrained
NUCLEI="${1:-$PRE/nuclei.safetensors}"
EM="${2:-$PRE/em-membranes.safetensors}"
DATA="${DSB_GREY:-/tmp/dsb_grey}"
ISBI="${ISBI:-../shared/data/isbi2012}"
WORK="${WORK:-/tmp/pretrained_eval}"
[ -d "$DATA/val/images" ] || python benchmarks/pretrained/prepare_dsb.py --out "$DATA"

# nuclei: DSB 2018 average precision on the 48 held-out greyscale fluorescence images
napari-unet predict --model "$NUCLEI" "$DATA/val/images" --out "$WORK/nuclei" \
  --overwrite --quiet
napari-unet evaluate --pred "$WORK/nuclei" --gt "$DATA/val/labels" \
  --metrics ap50 ap75 mean_ap precision50 recall50 f1_50 seg \
  --json docs/models/nuclei_validation.json

# em-membranes: ISBI 2012 pixel and Rand error (best threshold) on slices 20-24
mkdir -p "$WORK/isbi_val"
for i in 20 21 22 23 24; do ln -sf "$(cd "$ISBI" && pwd)/images/slice_$i.png" "$WORK/isbi_val/"; done
napari-unet predict --model "$EM" "$WORK/isbi_val" --out "$WORK/em" --probabilities \
  --overwrite --quiet
python benchmarks/pretrained/evaluate_em.py --probabilities "$WORK/em/probabilities" \
  --gt "$ISBI/labels" --slices 20-24 --json docs/models/em-membranes_validation.json
