"""U-Net++ pruning: size, speed, memory and accuracy of each level (issue 7).

The U-Net++ papers (Zhou et al. 2018, 2019) prune the trained network at
inference: level ``L`` keeps only the nodes ``X^{i,j}`` with ``i + j <= L``
and answers with head ``L``. This benchmark measures, for L1 ... L4 and the
ensemble of all four heads (the baseline of every ratio):

- parameters of the pruned model (:meth:`UNetPlusPlus.prune`), at the
  papers' width (base 32 channels, two classes);
- forward time per input megapixel on the CPU, at the papers' width, batch
  1, one 512x512 tile (256 with ``--quick``), channels-last as
  :func:`~napari_unet.tiling.predict_tiled` runs it; the levels are timed
  in turn, round after round, and each keeps its best of 5 rounds, so a
  burst of load elsewhere on the machine does not favour one level;
- peak memory of one forward pass: the peak resident set size during the
  pass (Linux ``VmHWM``, reset just before it) minus the resident size just
  before it, in a fresh subprocess per level that has already built the
  model and the input. It counts the activations and oneDNN's workspace
  resident at the peak, not the weights or the input; memory the allocator
  reuses from earlier frees can only make it smaller, and glibc's mmap
  threshold is fixed (``MALLOC_MMAP_THRESHOLD_=65536``) so that it does not;
- cell IoU and Dice on ISBI 2012 slices 20-24 (whole 512x512 slices,
  argmax of the softmax) after one fixed, short deep-supervision training of
  a reduced-width network (base 8 channels, batch norm) on random 128x128
  crops of slices 00-19 with flips and rotations, Adam, the hybrid loss
  (cross-entropy / 2 + soft Dice) averaged over the four heads. The ratio
  there is ours / ensemble.

Run ``python benchmarks/run.py unetpp``; the paper-style table is also
printed to stderr. ``python benchmarks/bench_unetpp.py --peak-rss LEVEL SIZE``
is the subprocess measurement.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import Row
from napari_unet.deep_supervision import deep_supervision_loss
from napari_unet.metrics import class_scores
from napari_unet.models import UNetPlusPlus

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"
LEVELS: tuple[int | None, ...] = (1, 2, 3, 4, None)  # None: the ensemble
PAPER_WIDTH = 32
TRAIN_WIDTH = 8
CROP = 128
BATCH = 4


def _name(level: int | None) -> str:
    return "ensemble" if level is None else f"L{level}"


def _model(level: int | None, base: int = PAPER_WIDTH, seed: int = 0) -> UNetPlusPlus:
    """The papers' network (or another width), pruned at ``level`` or whole."""
    torch.manual_seed(seed)
    full = UNetPlusPlus(num_classes=2, base_channels=base).eval()
    return full if level is None else full.prune(level)


def _status_kib(field: str) -> int:
    """A ``VmRSS`` / ``VmHWM`` line of /proc/self/status, in KiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_rss_child(level: int | None, size: int) -> None:
    model = _model(level).to(memory_format=torch.channels_last)
    x = torch.randn(1, 1, size, size).to(memory_format=torch.channels_last)
    # Reset the peak (VmHWM) to the current resident size, so that what the
    # imports and building the full model before pruning it left behind does
    # not hide the forward pass's peak (Linux >= 4.0, clear_refs "5").
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    with torch.inference_mode():
        model(x)
    print(json.dumps({"peak_growth_mib": (_status_kib("VmHWM") - before) / 1024}))


def _peak_rss_mib(level: int | None, size: int) -> float:
    # A fixed mmap threshold makes glibc map every large block and unmap it
    # on free; otherwise its dynamic threshold keeps freed activations in the
    # heap and the figures vary by 15% from run to run.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run(
        [sys.executable, __file__, "--peak-rss", _name(level), str(size)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(result.stdout.strip().splitlines()[-1])["peak_growth_mib"])


def _load_isbi(indices: range) -> tuple[np.ndarray, np.ndarray]:
    from napari_unet.io import read_image

    images = np.stack([read_image(DATA / "images" / f"slice_{i:02d}.png") for i in indices])
    labels = np.stack([read_image(DATA / "labels" / f"slice_{i:02d}.png") for i in indices])
    return images.astype(np.float32), (labels > 127).astype(np.int64)  # 1 = cell, 0 = membrane


def _train(iterations: int) -> tuple[UNetPlusPlus, float, np.ndarray, np.ndarray, float]:
    """Deep-supervision training; returns the model, time, test images/labels, loss."""
    images, labels = _load_isbi(range(20))
    mean, std = images.mean(), images.std()
    test_images, test_labels = _load_isbi(range(20, 25))
    images = (images - mean) / std
    test_images = (test_images - mean) / std

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = UNetPlusPlus(num_classes=2, base_channels=TRAIN_WIDTH, batch_norm=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iterations)
    model.train()
    start = time.perf_counter()
    losses = []
    for _ in range(iterations):
        xs, ys = [], []
        for _ in range(BATCH):
            k = rng.integers(len(images))
            y0, x0 = rng.integers(0, images.shape[1] - CROP + 1, size=2)
            crop = np.s_[k, y0 : y0 + CROP, x0 : x0 + CROP]
            image, label = images[crop], labels[crop]
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))
            image, label = np.rot90(image, turns), np.rot90(label, turns)
            if flip:
                image, label = image[:, ::-1], label[:, ::-1]
            xs.append(image.copy())
            ys.append(label.copy())
        x = torch.from_numpy(np.stack(xs))[:, None]
        y = torch.from_numpy(np.stack(ys))
        loss = deep_supervision_loss(model.forward_heads(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - start
    final_loss = float(np.mean(losses[-20:]))
    return model.eval(), seconds, test_images, test_labels, final_loss


def _scores(model: UNetPlusPlus, images: np.ndarray, labels: np.ndarray) -> dict:
    with torch.inference_mode():
        pred = model(torch.from_numpy(images)[:, None]).argmax(1).numpy()
    return class_scores(labels, pred, num_classes=2)


def run(quick: bool = False) -> list[Row]:
    size = 256 if quick else 512
    iterations = 20 if quick else 200
    mpx = size * size / 1e6

    x = torch.randn(1, 1, size, size).to(memory_format=torch.channels_last)
    models = {level: _model(level).to(memory_format=torch.channels_last) for level in LEVELS}
    params = {level: sum(p.numel() for p in m.parameters()) for level, m in models.items()}
    best = dict.fromkeys(LEVELS, float("inf"))
    with torch.inference_mode():
        for round_ in range(6):  # round 0 warms up (oneDNN primitive creation)
            for level, model in models.items():
                start = time.perf_counter()
                model(x)
                if round_:
                    best[level] = min(best[level], time.perf_counter() - start)
    del models
    ms_per_mpx = {level: 1000 * best[level] / mpx for level in LEVELS}
    peak_mib = {level: _peak_rss_mib(level, size) for level in LEVELS}

    trained, train_s, test_images, test_labels, final_loss = _train(iterations)
    scores = {}
    for level in LEVELS:
        trained.output_level = level
        scores[level] = _scores(trained, test_images, test_labels)
    trained.output_level = None

    _print_table(params, ms_per_mpx, peak_mib, scores, size, iterations, train_s, final_loss)

    ens = None
    setting = f"{size}x{size}, base {PAPER_WIDTH}"
    training = f"ISBI 20-24, base {TRAIN_WIDTH}, {iterations} it"
    rows = []
    for level in LEVELS:
        name = f"U-Net++ {_name(level)}"
        # The paper compares L3 with L4, whose time equals the ensemble's.
        paper_time = "paper L3 vs L4: 1.47x (-32%)" if level == 3 else ""
        paper_iou = "paper L3 vs L4: -0.6 points" if level == 3 else ""
        rows += [
            Row(
                f"{name} forward {setting} ({params[level] / 1e6:.2f} M)",
                "ensemble",
                ms_per_mpx[ens],
                ms_per_mpx[level],
                "ms/Mpx",
                ms_per_mpx[ens] / ms_per_mpx[level],
                paper_time,
            ),
            Row(
                f"{name} peak RSS growth, forward {setting}",
                "ensemble",
                peak_mib[ens],
                peak_mib[level],
                "MiB",
                peak_mib[ens] / peak_mib[level],
            ),
            Row(
                f"{name} cell IoU, {training}",
                "ensemble",
                scores[ens]["iou"][1],
                scores[level]["iou"][1],
                "IoU",
                scores[level]["iou"][1] / scores[ens]["iou"][1],
                paper_iou,
            ),
            Row(
                f"{name} cell Dice, {training}",
                "ensemble",
                scores[ens]["dice"][1],
                scores[level]["dice"][1],
                "Dice",
                scores[level]["dice"][1] / scores[ens]["dice"][1],
            ),
        ]
    return rows


def _print_table(params, ms_per_mpx, peak_mib, scores, size, iterations, train_s, loss) -> None:
    lines = [
        f"U-Net++ pruning: forward {size}x{size}, base {PAPER_WIDTH}, 2 classes, "
        f"{torch.get_num_threads()} threads; accuracy after {iterations} iterations "
        f"(batch {BATCH}, {CROP}x{CROP} crops, base {TRAIN_WIDTH}, batch norm, "
        f"{train_s:.0f} s, final loss {loss:.3f}) on ISBI 2012 slices 20-24",
        "level    | params (M) | ms/Mpx | time vs ens | peak MiB | cell IoU | cell Dice "
        "| membrane IoU",
    ]
    for level in LEVELS:
        s = scores[level]
        lines.append(
            f"{_name(level):<8} | {params[level] / 1e6:10.3f} | {ms_per_mpx[level]:6.0f} | "
            f"{ms_per_mpx[level] / ms_per_mpx[None]:11.2f} | {peak_mib[level]:8.0f} | "
            f"{s['iou'][1]:8.4f} | {s['dice'][1]:9.4f} | {s['iou'][0]:12.4f}"
        )
    print("\n".join(lines), file=sys.stderr, flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--peak-rss":
        name = sys.argv[2]
        _peak_rss_child(None if name == "ensemble" else int(name[1:]), int(sys.argv[3]))
    else:
        for row in run(quick="--quick" in sys.argv):
            print(row)
