"""Volumes: 3D U-Net prediction and training speed and memory, the tile chooser in 3D, linking.

Every measurement runs in a fresh process (one thread) so that its peak
resident memory (``ru_maxrss``) belongs to it alone; memory is reported as
the growth of the peak over the process's state just before the measured
call, per million voxels. Rows:

- 3D prediction (tiled, valid padding, anisotropic pooling) of a synthetic
  stack against per-plane prediction of the same stack by a 2D U-Net of the
  same depth and width: seconds and peak MiB per million voxels;
- the tile chooser's memory model in 3D: the activation bytes it budgets for
  the tile it picks against the measured peak growth of one forward pass;
- one training step on a 3D tile against a 2D step on the same number of
  output pixels (seconds per million output voxels);
- linking: objects per true cell, per-plane labels of a synthetic anisotropic
  stack against the same labels linked through Z (linking.link_planes);
- chunked 3D prediction (``predict_dask``, a halo per axis, synchronous
  scheduler) against the in-memory 3D prediction of the same volume: seconds
  and peak MiB per million voxels, and the largest difference;
- chunked linking (``segment._link_chunked``: overlap tables per Zarr chunk,
  one relabel pass) against ``link_planes`` on the same stack in memory.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from _common import Row

_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from napari_unet.models import UNet
from napari_unet.tiling import choose_tile_shape, predict_stack, predict_tiled
task, depth, base, z, y, x = sys.argv[1], *map(int, sys.argv[2:7])
rng = np.random.default_rng(0)
torch.manual_seed(0)
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {}
if task == "dask3d":  # chunked 3D prediction, synchronous (one thread)
    import dask, dask.array as da
    from napari_unet.tiling import predict_dask
    volume = rng.normal(size=(z, y, x)).astype(np.float32)
    net = UNet(depth=depth, base_channels=base, dropout=0.0, num_classes=3,
               spatial_dims=3, spacing=(2.0, 1.0, 1.0)).eval()
    chunks = tuple(int(c) for c in sys.argv[7].split(","))
    lazy = predict_dask(net, da.from_array(volume, chunks=chunks), device="cpu", backend="eager")
    out["chunks"] = [len(c) for c in lazy.chunks[1:]]
    before = rss()
    start = time.perf_counter()
    with dask.config.set(scheduler="synchronous"):
        result = lazy.compute()
    out["seconds"] = time.perf_counter() - start
    out["peak_mib"] = rss() - before
    expected = predict_tiled(net, volume, device="cpu", backend="eager")
    out["max_diff"] = float(np.abs(result - expected).max())
elif task in ("predict3d", "predict2d", "chooser"):
    volume = rng.normal(size=(z, y, x)).astype(np.float32) if task != "chooser" else None
    if task == "predict2d":
        net = UNet(depth=depth, base_channels=base, dropout=0.0, num_classes=3).eval()
        run = lambda: predict_stack(net, volume, device="cpu")
    else:
        net = UNet(depth=depth, base_channels=base, dropout=0.0, num_classes=3,
                   spatial_dims=3, spacing=(2.0, 1.0, 1.0)).eval()
        budget = int(sys.argv[7]) if task == "chooser" else None
        tile = choose_tile_shape(net, (z, y, x), "cpu", memory_budget=budget) if budget else None
        if task == "chooser":
            volume = rng.normal(size=tile).astype(np.float32)
            out["tile"] = list(tile)
            def run():
                with torch.inference_mode():
                    net(torch.from_numpy(volume)[None, None])

            # Warm-up on the smallest tile: one-off allocations are not the tile's.
            with torch.inference_mode():
                net(torch.zeros(1, 1, *net.valid_input_shape((1, 1, 1))))
        else:
            run = lambda: predict_tiled(net, volume, device="cpu")
    before = rss()
    start = time.perf_counter()
    run()
    out["seconds"] = time.perf_counter() - start
    out["peak_mib"] = rss() - before
else:  # one training step: forward, weighted CE, backward, Adam
    nd = 3 if task == "train3d" else 2
    kwargs = {"spatial_dims": 3, "spacing": (2.0, 1.0, 1.0)} if nd == 3 else {}
    net = UNet(depth=depth, base_channels=base, dropout=0.0, num_classes=3, batch_norm=True,
               **kwargs)
    want = (z, y, x) if nd == 3 else (y, x)
    tile = net.valid_input_shape(want)
    outs = net.output_shape(tile)
    batch = 1 if nd == 3 else z  # z planes of (y, x): the same output voxels
    image = torch.from_numpy(rng.normal(size=(batch, 1, *tile)).astype(np.float32))
    target = torch.from_numpy(rng.integers(0, 3, size=(batch, *outs)))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(image), target)
        loss.backward()
        opt.step()
    step()
    before = rss()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    out["seconds"] = min(times)
    out["peak_mib"] = rss() - before
    out["out_voxels"] = int(np.prod(outs)) * batch
print(json.dumps(out))
"""


def _child(*args: object) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env={"OMP_NUM_THREADS": "1", **__import__("os").environ},
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.splitlines()[-1])


def _linking_row(quick: bool) -> Row:
    from napari_unet._sample_data import synthetic_cells
    from napari_unet.linking import link_planes

    shape = (12, 96, 96) if quick else (24, 160, 160)
    labels = synthetic_cells(shape, spacing=(2.0, 1.0, 1.0), seed=5)[1]
    rng = np.random.default_rng(0)
    planes = np.zeros_like(labels)
    offset = 0
    for z in range(shape[0]):  # per-plane ids, as a 2D model numbers them
        lut = np.concatenate([[0], rng.permutation(int(labels.max())) + 1 + offset])
        planes[z] = lut[labels[z]]
        offset += int(labels.max())
    true = len(np.unique(labels)) - 1
    per_plane = len(np.unique(planes)) - 1
    linked = int(link_planes(planes).max())
    return Row(
        name=f"objects per true cell, {shape} stack ({true} cells), ground-truth planes",
        baseline="per-plane ids",
        baseline_value=per_plane / true,
        ours_value=linked / true,
        unit="ids/cell",
        ratio=(per_plane / true) / (linked / true),
        goal="ours within 1 +- 0.1",
    )


def _chunked_rows(quick: bool, depth: int, base: int) -> list[Row]:
    z, y, x = (40, 112, 112) if quick else (64, 256, 256)
    chunks = (20, 56, 56) if quick else (32, 128, 128)
    mvox = z * y * x / 1e6
    memory = _child("predict3d", depth, base, z, y, x)
    chunked = _child("dask3d", depth, base, z, y, x, ",".join(map(str, chunks)))
    grid = "x".join(map(str, chunked["chunks"]))
    return [
        Row(
            name=f"chunked 3D predict {z}x{y}x{x} ({grid} chunks; max diff "
            f"{chunked['max_diff']:.1e})",
            baseline="in-memory 3D predict",
            baseline_value=memory["seconds"] / mvox,
            ours_value=chunked["seconds"] / mvox,
            unit="s/Mvoxel",
            ratio=memory["seconds"] / chunked["seconds"],
            goal="report (exact to 1e-4)",
        ),
        Row(
            name=f"chunked 3D predict {z}x{y}x{x}, peak memory growth",
            baseline="in-memory 3D predict",
            baseline_value=memory["peak_mib"] / mvox,
            ours_value=chunked["peak_mib"] / mvox,
            unit="MiB/Mvoxel",
            ratio=memory["peak_mib"] / max(chunked["peak_mib"], 1e-3),
            goal="report",
        ),
        _chunked_linking_row(quick),
    ]


def _chunked_linking_row(quick: bool) -> Row:
    import tempfile
    import time

    import zarr

    from napari_unet._sample_data import synthetic_cells
    from napari_unet.linking import link_planes
    from napari_unet.segment._link_chunked import link_lookup, relabel_in_place

    shape = (12, 256, 256) if quick else (24, 512, 512)
    labels = synthetic_cells(shape, spacing=(2.0, 1.0, 1.0), seed=5)[1]
    planes = np.zeros(labels.shape, np.uint32)
    offset = 0
    for z in range(shape[0]):  # per-plane ids unique over the stack, as segment_chunked has them
        planes[z] = np.where(labels[z] > 0, labels[z] + offset, 0)
        offset += int(labels.max())
    memory_s, chunked_s = [], []
    with tempfile.TemporaryDirectory() as folder:
        store = zarr.open_array(
            f"{folder}/l.zarr", mode="w", shape=shape, chunks=(1, 128, 128), dtype="u4"
        )
        for _ in range(3):  # best of 3: the first pays for the imports
            start = time.perf_counter()
            expected = link_planes(planes)
            memory_s.append(time.perf_counter() - start)
            store[:] = planes
            start = time.perf_counter()
            relabel_in_place(store, link_lookup(store, 0))
            chunked_s.append(time.perf_counter() - start)
        linked = store[:]
    memory_s, chunked_s = min(memory_s), min(chunked_s)
    pairs = np.unique(np.stack([linked.ravel(), expected.ravel()]), axis=1)
    same = len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    return Row(
        name=f"link Z planes of a {shape} stack, Zarr chunks 1x128x128 "
        f"({'same objects' if same else 'DIFFERENT objects'})",
        baseline="link_planes in memory",
        baseline_value=memory_s,
        ours_value=chunked_s,
        unit="s",
        ratio=memory_s / chunked_s,
        goal="report (same objects)",
    )


def run(quick: bool = False) -> list[Row]:
    depth, base = 2, 8
    z, y, x = (16, 96, 96) if quick else (32, 192, 192)
    mvox = z * y * x / 1e6
    p3 = _child("predict3d", depth, base, z, y, x)
    p2 = _child("predict2d", depth, base, z, y, x)
    rows = [
        Row(
            name=f"predict {z}x{y}x{x}, 3D U-Net (depth {depth}, base {base}, spacing 2:1:1)",
            baseline="2D U-Net per plane",
            baseline_value=p2["seconds"] / mvox,
            ours_value=p3["seconds"] / mvox,
            unit="s/Mvoxel",
            ratio=p2["seconds"] / p3["seconds"],
            goal="report",
        ),
        Row(
            name=f"predict {z}x{y}x{x}, peak memory growth",
            baseline="2D U-Net per plane",
            baseline_value=p2["peak_mib"] / mvox,
            ours_value=p3["peak_mib"] / mvox,
            unit="MiB/Mvoxel",
            ratio=p2["peak_mib"] / max(p3["peak_mib"], 1e-3),
            goal="report",
        ),
    ]
    budget = 256 * 2**20
    chooser = _child("chooser", depth, base, 500, 500, 500, budget)
    rows.append(
        Row(
            name=f"tile chooser in 3D: tile {tuple(chooser['tile'])} for a "
            f"{budget // 2**20} MiB budget, measured forward-pass peak",
            baseline="budget",
            baseline_value=budget / 2**20,
            ours_value=chooser["peak_mib"],
            unit="MiB",
            ratio=budget / 2**20 / max(chooser["peak_mib"], 1e-3),
            goal=">= 1x (measured within budget)",
        )
    )
    tz, ty, tx = (8, 32, 32) if quick else (16, 64, 64)
    t3 = _child("train3d", depth, base, tz, ty, tx)
    t2 = _child("train2d", depth, base, tz, ty, tx)
    rows.append(
        Row(
            name=f"training step, 3D tile with >= {tz}x{ty}x{tx} output vs {tz} 2D tiles",
            baseline="2D step, same output voxels",
            baseline_value=t2["seconds"] / (t2["out_voxels"] / 1e6),
            ours_value=t3["seconds"] / (t3["out_voxels"] / 1e6),
            unit="s/Mvoxel",
            ratio=(t2["seconds"] / t2["out_voxels"]) / (t3["seconds"] / t3["out_voxels"]),
            goal="report",
        )
    )
    rows.append(
        Row(
            name="training step peak memory growth",
            baseline="2D step",
            baseline_value=t2["peak_mib"] / (t2["out_voxels"] / 1e6),
            ours_value=t3["peak_mib"] / (t3["out_voxels"] / 1e6),
            unit="MiB/Mvoxel",
            ratio=(t2["peak_mib"] / t2["out_voxels"])
            / max(t3["peak_mib"] / t3["out_voxels"], 1e-9),
            goal="report",
        )
    )
    rows.append(_linking_row(quick))
    rows.extend(_chunked_rows(quick, depth, base))
    return rows
