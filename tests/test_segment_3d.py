"""The segmentation pipeline on volumes: linked Z planes (2D models) and 3D models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet._sample_data import synthetic_cells
from napari_unet.errors import RedundantComputeWarning
from napari_unet.linking import link_planes
from napari_unet.models import UNet
from napari_unet.postprocess import probabilities_to_labels
from napari_unet.segment import SegmentConfig, segment


def _stack() -> np.ndarray:
    return synthetic_cells((6, 40, 40), radius=(6.0, 9.0), spacing=(2.0, 1.0, 1.0), seed=4)[0]


def test_link_planes_joins_a_2d_models_planes():
    torch.manual_seed(0)
    net = UNet(num_classes=3, depth=1, base_channels=4, padding="same").eval()
    stack = _stack()
    apart = segment(net, stack, config=SegmentConfig(device="cpu")).labels
    linked = segment(net, stack, config=SegmentConfig(device="cpu", link_planes=True)).labels
    assert linked.shape == stack.shape and linked.dtype == np.uint32
    np.testing.assert_array_equal(linked, link_planes(apart))
    assert (linked > 0).sum() == (apart > 0).sum()


def test_a_3d_model_segments_the_volume_in_3d():
    torch.manual_seed(1)
    net = UNet(num_classes=3, depth=1, base_channels=4, spatial_dims=3, spacing=(2, 1, 1)).eval()
    stack = _stack()
    result = segment(net, stack, config=SegmentConfig(device="cpu", threshold=0.5))
    assert result.probabilities.shape == (3, *stack.shape)
    expected = probabilities_to_labels(result.probabilities, threshold=0.5, spatial_dims=3)
    np.testing.assert_array_equal(result.labels, expected)


def test_memory_estimate_tiles_a_volume_for_a_3d_model():
    from napari_unet.memory import estimate_prediction_memory

    net = UNet(num_classes=3, depth=1, base_channels=4, spatial_dims=3, spacing=(2, 1, 1))
    small = estimate_prediction_memory((8, 64, 64), net, labels=False)
    large = estimate_prediction_memory((32, 64, 64), net, labels=False)
    assert 0 < small < large


@pytest.mark.slow
def test_chunked_3d_segmentation_equals_the_in_memory_volume(tmp_path):
    """A 3D model on a Zarr volume: 3D overlap-tile per chunk, instances merged across chunks."""
    zarr = pytest.importorskip("zarr")
    from scipy import ndimage as ndi

    from napari_unet.io import create_ome_zarr
    from napari_unet.normalize import Normalization
    from napari_unet.segment import segment_chunked

    image = synthetic_cells((24, 64, 64), radius=(6.0, 9.0), spacing=(2.0, 1.0, 1.0), seed=5)[0]
    image = ndi.gaussian_filter(image.astype(np.float32), (0.5, 1.5, 1.5))
    torch.manual_seed(4)
    net = UNet(num_classes=2, depth=1, base_channels=4, spatial_dims=3, spacing=(2, 1, 1))
    net = net.eval()
    # The head follows the feature map closest to the brightness: blobs that follow the cells.
    features = {}
    hook = net.head.register_forward_hook(lambda m, i, o: features.setdefault("f", i[0]))
    x = Normalization()(image, channel_axis=None)
    with torch.no_grad():
        shape = net.valid_input_shape(x.shape)
        pads = [(h, n - s - h) for n, s, h in zip(shape, x.shape, net.halo, strict=True)]
        net(torch.from_numpy(np.pad(x, pads, mode="reflect"))[None, None])
        hook.remove()
        f = features["f"][0].numpy()[:, : x.shape[0], : x.shape[1], : x.shape[2]]
        r = [np.corrcoef(m.ravel(), x.ravel())[0, 1] for m in f]
        k = int(np.argmax(np.abs(r)))
        scale = float(np.sign(r[k])) * 8.0 / float(f[k].std())
        net.head.weight.zero_()
        net.head.weight[1, k] = scale
        net.head.bias.zero_()
        net.head.bias[1] = -scale * float(np.quantile(f[k], 0.75))  # apart blobs
    config = SegmentConfig(device="cpu", backend="eager", postprocess={"method": "components"})
    expected = segment(net, image, config=config)
    assert expected.labels.max() > 5
    create_ome_zarr(
        tmp_path / "v.zarr", shape=image.shape, chunks=(8, 32, 32), dtype=image.dtype, axes="zyx"
    )[:] = image
    with pytest.warns(RedundantComputeWarning):  # small chunks, to have several per axis
        count = segment_chunked(
            net, tmp_path / "v.zarr", tmp_path / "l.zarr", tmp_path / "p.zarr",
            chunks=(12, 32, 32), margin=16, config=config,
        )  # fmt: skip
    probs = zarr.open_array(str(tmp_path / "p.zarr" / "0"), mode="r")
    labels = zarr.open_array(str(tmp_path / "l.zarr" / "0"), mode="r")
    assert len(probs.chunks) == 4 and probs.chunks[1] < image.shape[0]  # chunked in Z too
    np.testing.assert_allclose(probs[:], expected.probabilities, atol=1e-4)
    result = labels[:]
    pairs = np.unique(np.stack([result.ravel(), expected.labels.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    assert count == expected.labels.max()
    # Objects crossed the chunk borders in Z and in the plane, and kept one id.
    z_border = set(np.unique(result[11])) & set(np.unique(result[12])) - {0}
    x_border = set(np.unique(result[:, :, 31])) & set(np.unique(result[:, :, 32])) - {0}
    assert z_border and x_border
