"""Peak memory of chunked prediction: it must follow the chunk size, not the array size.

``napari-unet predict`` in chunked mode (issue 8) reads a Zarr array chunk by
chunk, predicts, labels with ids merged across chunks and writes OME-Zarr
chunk by chunk. Two uint8 Zarr images with the same 512 x 512 chunks, one 16
times larger than the other (2k x 2k and 8k x 8k; 1k and 4k with --quick), are
predicted with a tiny model, each in a fresh process whose peak resident
memory is read with ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``. Rows:

- growth: RSS(large) / RSS(small) against the array-size ratio it would
  follow if memory grew with the array (ratio = size ratio / RSS ratio; 16x
  means constant memory);
- the chunked large array against the in-memory TIFF path (the whole image,
  its probabilities and labels in memory) on an image of half its side
  (ratio > 1: chunked prediction of 4 times the pixels needs less memory).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import Row

# Runs one command in a child process and prints that child's peak RSS in KiB
# (Linux reports ru_maxrss in KiB): the benchmark process itself is not counted.
_MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
if code:
    sys.exit(code)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _peak_rss_mib(args: list[str]) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *args], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return int(done.stdout.split()[-1]) / 1024


def _write_image(path: Path, side: int, chunk: int) -> None:
    """A uint8 OME-Zarr of blobs and noise, written chunk by chunk."""
    import dask.array as da

    from napari_unet.io import create_ome_zarr

    def blobs(block: np.ndarray, block_info: dict) -> np.ndarray:
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        yy, xx = np.mgrid[y0:y1, x0:x1]
        rng = np.random.default_rng(y0 * 100003 + x0)
        cells = (np.sin(yy / 9.0) * np.sin(xx / 11.0) > 0.3) * 120.0
        return (cells + rng.normal(50, 20, cells.shape)).clip(0, 255).astype(np.uint8)

    lazy = da.zeros((side, side), chunks=chunk, dtype=np.uint8).map_blocks(blobs, dtype=np.uint8)
    target = create_ome_zarr(
        path, shape=lazy.shape, chunks=(chunk, chunk), dtype=np.uint8, axes=("y", "x")
    )
    da.store(lazy, target, lock=False)


def run(quick: bool = False) -> list[Row]:
    from napari_unet.io import open_chunked, save_model, write_image
    from napari_unet.models import UNet

    small, large, chunk = (1024, 4096, 512) if quick else (2048, 8192, 512)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        save_model(UNet(depth=2, base_channels=4, num_classes=3, dropout=0.0), root / "m.st")
        cli = [sys.executable, "-m", "napari_unet.cli", "predict", "--model", str(root / "m.st")]
        options = ["--device", "cpu", "--quiet", "--labels-margin", "32"]
        rss, seconds = {}, {}
        for side in (small, large):
            _write_image(root / f"{side}.zarr", side, chunk)
            start = time.perf_counter()
            rss[side] = _peak_rss_mib(
                [*cli, str(root / f"{side}.zarr"), "--out", str(root / f"out{side}"), *options]
            )
            seconds[side] = time.perf_counter() - start
        # The in-memory path on an image of half the large side, as a TIFF.
        half = large // 2
        _write_image(root / "half.zarr", half, chunk)
        write_image(root / "half.tif", open_chunked(root / "half.zarr").data.compute())
        in_memory = _peak_rss_mib(
            [*cli, str(root / "half.tif"), "--out", str(root / "tif"), *options]
        )

    size_ratio = (large / small) ** 2
    growth = rss[large] / rss[small]
    print(
        f"  peak RSS: {small}^2 {rss[small]:.0f} MiB ({seconds[small]:.0f} s), "
        f"{large}^2 {rss[large]:.0f} MiB ({seconds[large]:.0f} s), "
        f"in-memory {half}^2 TIFF {in_memory:.0f} MiB",
        file=sys.stderr,
    )
    rows.append(
        Row(
            name=f"peak RSS growth, chunked predict {small}^2 -> {large}^2 uint8 Zarr "
            f"(chunks {chunk}; {rss[small]:.0f} -> {rss[large]:.0f} MiB)",
            baseline="growth with array size",
            baseline_value=size_ratio,
            ours_value=growth,
            unit="x RSS",
            ratio=size_ratio / growth,
            goal=f">= {size_ratio / 1.5:.1f}x (RSS ratio <= 1.5)",
        )
    )
    rows.append(
        Row(
            name=f"peak RSS, chunked {large}^2 Zarr vs in-memory {half}^2 TIFF",
            baseline=f"in-memory {half}^2",
            baseline_value=in_memory,
            ours_value=rss[large],
            unit="MiB",
            ratio=in_memory / rss[large],
            goal="> 1x",
        )
    )
    return rows
