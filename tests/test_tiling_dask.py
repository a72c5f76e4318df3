"""Chunked prediction with Dask equals in-memory prediction, chunk borders included."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from napari_unet.models import UNet
from napari_unet.tiling import _aligned_chunks, predict_dask, predict_stack

da = pytest.importorskip("dask.array")


@pytest.mark.parametrize(
    ("padding", "depth", "chunks"),
    [
        ("valid", 2, (1, 40, 50)),
        ("valid", 3, (2, 64, 64)),
        ("valid", 4, (1, 128, 100)),
        ("same", 2, (1, 70, 90)),
    ],
)
def test_dask_prediction_equals_in_memory_prediction(padding, depth, chunks):
    torch.manual_seed(depth)
    net = UNet(depth=depth, base_channels=2, padding=padding, dropout=0.0).eval()
    image = np.random.default_rng(depth).normal(size=(2, 301, 283)).astype(np.float32)
    lazy = predict_dask(net, da.from_array(image, chunks=chunks))
    assert lazy.shape == (2, 2, 301, 283)
    assert lazy.dtype == np.float32
    # Several chunks per axis, so chunk borders are really crossed.
    assert min(len(c) for c in lazy.chunks[-2:]) >= 2
    np.testing.assert_allclose(lazy.compute(), predict_stack(net, image), atol=1e-4, rtol=0)


def test_dask_prediction_with_channel_axis_and_partial_compute():
    torch.manual_seed(0)
    net = UNet(in_channels=2, depth=2, base_channels=2, dropout=0.0).eval()
    data = np.random.default_rng(0).normal(size=(3, 2, 150, 170)).astype(np.float32)  # Z C Y X
    lazy = predict_dask(net, da.from_array(data, chunks=(1, 2, 60, 60)), channel_axis=1)
    assert lazy.shape == (2, 3, 150, 170)
    expected = predict_stack(net, data, channel_axis=1)
    # Computing one region reads only the chunks it needs and is still exact.
    np.testing.assert_allclose(
        lazy[:, 1, 50:110, 40:130].compute(), expected[:, 1, 50:110, 40:130], atol=1e-4
    )


def test_aligned_chunks_start_on_the_pooling_grid_and_are_large_enough():
    chunks = _aligned_chunks(1000, 100, 16, 109)
    assert sum(chunks) == 1000
    starts = np.cumsum((0, *chunks[:-1]))
    assert all(s % 16 == 0 for s in starts)
    assert min(chunks) >= 109
    assert _aligned_chunks(50, 100, 16, 109) == (50,)


def test_bad_input_is_refused_before_anything_runs():
    net = UNet(in_channels=2, depth=1, base_channels=2)
    with pytest.raises(ValueError, match="has 3 channel"):
        predict_dask(net, da.zeros((3, 40, 40)), channel_axis=0)
    with pytest.raises(ValueError, match="has 40 channel"):
        predict_dask(net, da.zeros((2, 40, 40)), channel_axis=2)
    with pytest.raises(ValueError, match="`channel_axis` 5 is not an axis"):
        predict_dask(net, da.zeros((2, 40, 40)), channel_axis=5)
    with pytest.raises(ValueError, match="dtype"):
        predict_dask(net, da.from_array(np.array([["a"]])))


class _CountingUNet(UNet):
    """A U-Net that records, in a file per process, every time it is unpickled."""

    def __setstate__(self, state):
        super().__setstate__(state)
        with open(os.path.join(state["_count_dir"], f"{os.getpid()}.txt"), "a") as f:
            f.write("x")


@pytest.mark.slow
def test_local_cluster_of_two_processes_gets_the_model_once_per_worker(tmp_path):
    distributed = pytest.importorskip("distributed")
    torch.manual_seed(0)
    net = _CountingUNet(depth=2, base_channels=2, dropout=0.0).eval()
    net._count_dir = str(tmp_path)
    image = np.random.default_rng(0).normal(size=(4, 200, 200)).astype(np.float32)
    lazy = predict_dask(net, da.from_array(image, chunks=(1, 64, 64)))
    n_chunks = lazy.npartitions
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        result = client.compute(lazy).result()
    np.testing.assert_allclose(result, predict_stack(net, image), atol=1e-4)
    # The scheduler runs in this process and reads the graph once; workers
    # are the other processes.
    counts = [len(p.read_text()) for p in tmp_path.glob("*.txt") if p.stem != str(os.getpid())]
    assert n_chunks >= 16
    assert 1 <= len(counts) <= 2  # at most the two worker processes
    assert max(counts) == 1  # one copy per worker, not one per chunk
