"""Chunked outputs: an interrupted run leaves no valid-looking Zarr store under a final name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet import io, segment
from napari_unet.models import UNet
from napari_unet.outputs import TMP_SUFFIX
from napari_unet.segment import _chunked

pytest.importorskip("zarr")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("zarr-src")
    rng = np.random.default_rng(0)
    path = root / "image.tif"
    io.write_image(path, rng.integers(0, 255, (96, 96), dtype=np.uint8))
    torch.manual_seed(0)
    return path, UNet(depth=2, base_channels=4, dropout=0.0).eval()


def _left(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TMP_SUFFIX))


@pytest.mark.parametrize("interrupt_at", [1, 2], ids=["predicting", "labelling"])
@pytest.mark.parametrize("keep_probabilities", [False, True])
def test_interrupted_chunked_run_leaves_no_store(
    source, tmp_path, monkeypatch, interrupt_at, keep_probabilities
):
    # Issue 18 item 5: an interrupted chunked run left an OME-Zarr of all-zero chunks.
    image, net = source
    real = _chunked._store
    calls = []

    def store(array, target, *args, **kwargs):
        calls.append(1)
        if len(calls) == interrupt_at:
            target[(slice(0, 8),) * target.ndim] = 1  # a chunk or two, then Ctrl-C
            raise KeyboardInterrupt
        return real(array, target, *args, **kwargs)

    monkeypatch.setattr(_chunked, "_store", store)
    labels = tmp_path / "labels.zarr"
    probs = tmp_path / "probs.zarr" if keep_probabilities else None
    with pytest.raises(KeyboardInterrupt):
        segment.segment_chunked(net, image, labels, probs, chunks=(64, 64), margin=8)
    assert not labels.exists()
    assert probs is None or not probs.exists()
    assert _left(tmp_path) == []


def test_completed_chunked_run_replaces_the_store(source, tmp_path):
    image, net = source
    labels = tmp_path / "labels.zarr"
    labels.mkdir()
    (labels / "stale").write_text("old run")
    count = segment.segment_chunked(net, image, labels, tmp_path / "p.zarr", chunks=(64, 64))
    assert not (labels / "stale").exists()
    stored = io.open_chunked(labels).data.compute()
    assert stored.shape == (96, 96) and int(stored.max()) == count
    assert io.open_chunked(tmp_path / "p.zarr").data.shape == (2, 96, 96)
    assert _left(tmp_path) == []
