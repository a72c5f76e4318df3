"""Training a 3D U-Net on volumes: 3D tiles, anisotropic weight maps, partial annotation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet._modelfile import load_model
from napari_unet._sample_data import synthetic_cells
from napari_unet.models import UNet
from napari_unet.training import TrainConfig, _prepare_plane, train, train_iter
from napari_unet.weights import weight_map

SPACING = (2.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def volume() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_cells((10, 48, 48), radius=(6.0, 9.0), spacing=SPACING, seed=3)


def _net(**kwargs) -> UNet:
    torch.manual_seed(0)
    options = {"num_classes": 3, "depth": 1, "base_channels": 4, "dropout": 0.0}
    return UNet(spatial_dims=3, spacing=SPACING, **{**options, **kwargs})


def _config(**kwargs) -> TrainConfig:
    options = {"iterations": 4, "optimizer": "adam", "device": "cpu", "val_every": 10**6}
    return TrainConfig(**{**options, **kwargs})


@pytest.mark.slow
def test_3d_training_learns_and_writes_the_spacing(tmp_path, volume):
    net = _net(batch_norm=True)
    tile = net.valid_input_shape((6, 16, 16))
    config = _config(iterations=30, tile_shape=tile, batch_size=2, lr=3e-3, w0=5.0, sigma=3.0)
    result = train([volume], model=net, config=config, out=tmp_path / "m.safetensors")
    assert np.mean(result.losses[-5:]) < 0.8 * np.mean(result.losses[:5])
    model, meta = load_model(tmp_path / "m.safetensors")
    assert model.spatial_dims == 3 and model.pool_kernels == ((1, 2, 2),)
    assert meta["spacing"] == [2.0, 1.0, 1.0]
    assert meta["training"]["tile_shape"] == list(tile)


def test_3d_samples_are_volumes_and_default_tiles_are_3d(volume):
    events = train_iter([volume], model=_net(), config=_config(iterations=1))
    result = None
    try:
        while True:
            next(events)
    except StopIteration as stop:
        result = stop.value
    tile = tuple(result.metadata["training"]["tile_shape"])
    assert len(tile) == 3 and _net().is_valid_input_shape(tile)
    assert result.metadata["training"]["planes"] == 1  # one volume, not 10 planes
    with pytest.raises(ValueError, match=r"trains on volumes.*\(Z, Y, X\)"):
        train([(volume[0][0], volume[1][0])], model=_net(), config=_config())
    with pytest.raises(ValueError, match=r"3 values \(Z, Y, X\)"):
        train([volume], model=_net(), config=_config(tile_shape=(20, 20)))


def test_weight_map_follows_the_voxel_spacing_and_partial_annotation(volume):
    image, labels = volume
    net = _net()
    tile = net.valid_input_shape((6, 16, 16))
    mask = np.zeros(labels.shape, bool)
    mask[3:5] = True  # two annotated planes of the volume
    norm = _config().make_normalization()
    prepared = _prepare_plane(image[None], labels, mask, norm, _config(), tile, net.halo, SPACING)
    inner = tuple(slice(o, o + s) for o, s in zip(prepared.offset, labels.shape, strict=True))
    weights = prepared.weights[inner]
    assert (weights[~mask] == 0).all() and (weights[mask] > 0).all()
    # Tiles are drawn only where annotated voxels are.
    z_blocks = {int(b[0]) for b in prepared.blocks}
    assert z_blocks == {0}  # blocks of 16 voxels along Z: the planes 3 and 4 lie in the first
    # Distances in the border term are in units of the spacing: planes 2 apart.
    expected = weight_map(labels, mask=mask, spacing=SPACING)
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    assert not np.allclose(weights, weight_map(labels, mask=mask))


def test_make_run_builds_a_3d_unet_for_dims_3():
    from napari_unet.train_settings import make_run

    spec, config = make_run(preset="cpu", dims=3, spacing=(2, 1, 1), depth=2, base_channels=8)
    net = spec.build(seed=0)
    assert net.spatial_dims == 3 and net.pool_kernels == ((1, 2, 2), (2, 2, 2))
    assert config.tile_shape is None  # the presets' plane tiles are not used for volumes
    assert make_run(preset="cpu", dims=3, tile=40)[1].tile_shape == (40, 40, 40)
    assert "spatial_dims" not in make_run(preset="cpu")[0].arguments()
