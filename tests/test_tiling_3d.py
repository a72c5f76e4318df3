"""3D overlap-tile prediction: tiled equals one pass over the whole mirror-padded volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.errors import RedundantComputeWarning
from napari_unet.models import UNet, UNetPlusPlus
from napari_unet.tiling import _mirror_pad, choose_tile_shape, predict_tiled

ANISO = (2.0, 1.0, 1.0)  # planes twice as far apart as pixels


def _net(padding: str, spacing=ANISO, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(
        depth=2, base_channels=2, padding=padding, dropout=0.0, spatial_dims=3, spacing=spacing
    )
    return net.eval()


def whole_volume_reference(net: UNet, volume: np.ndarray) -> np.ndarray:
    """One forward pass over the whole volume, mirror-padded by the halo (valid padding)."""
    size = volume.shape
    shape = net.valid_input_shape(size)
    pads = [(h, n - s - h) for n, s, h in zip(shape, size, net.halo, strict=True)]
    padded = _mirror_pad(volume[None].astype(np.float32), pads)
    with torch.inference_mode():
        logits = net(torch.from_numpy(np.ascontiguousarray(padded))[None])
    return torch.softmax(logits, 1)[0][(slice(None), *(slice(0, s) for s in size))].numpy()


def _one_tile(net, shape) -> tuple[int, ...]:
    """The smallest same-padding tile that covers a volume and its overlap at once."""
    from napari_unet.tiling import _Tiler

    margin = _Tiler.margin_of(net)
    return tuple(s + 2 * m for s, m in zip(shape, margin, strict=True))


def test_anisotropic_pooling_follows_the_voxel_spacing():
    net = _net("valid")
    assert net.pool_kernels == ((1, 2, 2), (2, 2, 2))
    assert net.divisors == (2, 4, 4)
    # Z loses less context: its first level is not pooled.
    assert net.halo[0] < net.halo[1] == net.halo[2]
    for shape in [(30, 48, 52), net.valid_input_shape((7, 9, 11))]:
        if net.is_valid_input_shape(shape):
            with torch.inference_mode():
                out = net(torch.zeros(1, 1, *shape))
            assert tuple(out.shape[2:]) == net.output_shape(shape)
    assert net.config()["spacing"] == [2.0, 1.0, 1.0]
    assert "spacing" not in UNet(depth=1, base_channels=2).config()  # 2D files unchanged
    with pytest.raises(ValueError, match="spacing"):
        UNet(spatial_dims=3, spacing=(1.0, 1.0))


@pytest.mark.parametrize("spacing", [ANISO, None])
@pytest.mark.parametrize("tile", [None, (34, 60, 48)])
def test_valid_3d_tiling_equals_one_pass_over_the_padded_volume(spacing, tile):
    net = _net("valid", spacing)
    if spacing is None and tile is not None:
        tile = (tile[1],) * 3  # isotropic pooling needs larger Z tiles
    volume = np.random.default_rng(3).normal(size=(13, 37, 29)).astype(np.float32)
    tiled = predict_tiled(net, volume, tile_shape=tile, device="cpu")
    assert tiled.shape == (2, 13, 37, 29)
    np.testing.assert_allclose(tiled, whole_volume_reference(net, volume), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_same_padding_3d_tiles_with_default_overlap_equal_one_whole_volume_pass():
    net = _net("same", seed=1)
    volume = np.random.default_rng(4).normal(size=(8, 21, 19)).astype(np.float32)
    whole = predict_tiled(net, volume, tile_shape=_one_tile(net, volume.shape))
    # Overlaps are (26, 48, 48) voxels: these tiles step by (10, 24, 24).
    tiled = predict_tiled(net, volume, tile_shape=(36, 72, 72))
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)


def test_unetplusplus_3d_tiles_exactly():
    torch.manual_seed(2)
    net = UNetPlusPlus(depth=1, base_channels=2, spatial_dims=3).eval()
    volume = np.random.default_rng(5).normal(size=(9, 14, 11)).astype(np.float32)
    whole = predict_tiled(net, volume, tile_shape=_one_tile(net, volume.shape))
    tiled = predict_tiled(net, volume, tile_shape=(30, 30, 30))  # overlap 18: 27 tiles
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)


def test_tile_chooser_gives_valid_3d_tiles_and_larger_planes_for_thin_stacks():
    net = _net("valid")
    budget = 64 * 2**20
    cube = choose_tile_shape(net, (500, 500, 500), "cpu", memory_budget=budget)
    thin = choose_tile_shape(net, (8, 500, 500), "cpu", memory_budget=budget)
    assert net.is_valid_input_shape(cube) and net.is_valid_input_shape(thin)
    assert thin[0] < cube[0] and thin[1] > cube[1]
    # Both fit the budget under the chooser's own memory model.
    per_voxel = 4 * 5.5 * net.base_channels
    assert np.prod(cube) * per_voxel <= budget * 1.05


def test_a_2d_image_for_a_3d_model_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(Z, Y, X\).*3D model"):
        predict_tiled(_net("valid"), np.zeros((32, 32), np.float32))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("padding", "depth", "shape"), [("valid", 2, (2, 40, 56, 60)), ("same", 1, (1, 48, 48, 52))]
)
def test_chunked_3d_prediction_equals_the_in_memory_prediction(padding, depth, shape):
    da = pytest.importorskip("dask.array")
    from napari_unet.tiling import predict_dask

    torch.manual_seed(3)
    net = UNet(depth=depth, base_channels=2, padding=padding, spatial_dims=3, spacing=ANISO)
    net = net.eval()
    volume = np.random.default_rng(3).random(shape).astype(np.float32)  # (T, Z, Y, X)
    with pytest.warns(RedundantComputeWarning):  # tiny chunks, to have several per axis
        lazy = predict_dask(net, da.from_array(volume, chunks=(1, 8, 16, 16)), device="cpu")
    # Chunked along every spatial axis, each chunk with its own halo per axis.
    assert all(len(c) >= 2 for c in lazy.chunks[-3:]), lazy.chunks
    result = lazy.compute()
    assert result.shape == (net.num_classes, *volume.shape)
    for t in range(shape[0]):
        expected = predict_tiled(net, volume[t], device="cpu")
        np.testing.assert_allclose(result[:, t], expected, atol=1e-4)
