"""Z planes linked into 3D objects in the chunked (Zarr) and lazy (napari) paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_unet._sample_data import synthetic_cells
from napari_unet.linking import link_planes
from napari_unet.models import UNet
from napari_unet.normalize import Normalization
from napari_unet.segment import SegmentConfig, segment

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    one_to_one = len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    return one_to_one and bool(np.array_equal(a == 0, b == 0))


@pytest.fixture(scope="module")
def stack_and_model():
    """A small anisotropic stack of touching cells and a 2-class model whose blobs follow it."""
    image = synthetic_cells((5, 112, 112), radius=(7.0, 10.0), spacing=(2.0, 1.0, 1.0), seed=3)[0]
    # Smoothed in the plane, so a random network's features follow the cells, not the noise.
    image = ndi.gaussian_filter(image.astype(np.float32), (0, 2.0, 2.0))
    torch.manual_seed(2)
    net = UNet(depth=1, base_channels=4, num_classes=2, padding="same").eval()
    features = {}
    hook = net.head.register_forward_hook(lambda m, i, o: features.setdefault("f", i[0]))
    x = Normalization()(image[2], channel_axis=None)
    with torch.no_grad():
        net(torch.from_numpy(x)[None, None])
        hook.remove()
        f = features["f"][0].numpy()
        # The feature map closest to the image's brightness decides the cell class.
        k = int(np.argmax([abs(np.corrcoef(m.ravel(), x.ravel())[0, 1]) for m in f]))
        sign = np.sign(np.corrcoef(f[k].ravel(), x.ravel())[0, 1])
        scale = float(sign) * 8.0 / float(f[k].std())
        net.head.weight.zero_()
        net.head.weight[1, k] = scale
        net.head.bias.zero_()
        net.head.bias[1] = -scale * float(np.quantile(f[k], 0.5))
    return image, net


@pytest.mark.slow
def test_chunked_linked_labels_equal_the_in_memory_linked_labels(stack_and_model, tmp_path):
    from napari_unet.io import create_ome_zarr
    from napari_unet.segment import segment_chunked

    image, net = stack_and_model
    # Connected components: labelled alike by a chunk and the whole plane whatever the
    # objects' size, so any difference would come from the merges and the linking.
    options = {"device": "cpu", "backend": "eager", "postprocess": {"method": "components"}}
    config = SegmentConfig(**options, link_planes=True)
    expected = segment(net, image, config=config).labels
    apart = segment(net, image, config=SegmentConfig(**options)).labels
    # Linking did something: many per-plane ids became fewer 3D objects.
    assert len(np.unique(expected)) < 0.6 * len(np.unique(apart))
    source = create_ome_zarr(
        tmp_path / "stack.zarr", shape=image.shape, chunks=(1, 48, 48), dtype=image.dtype,
        axes="zyx",
    )  # fmt: skip
    source[:] = image
    count = segment_chunked(
        net, tmp_path / "stack.zarr", tmp_path / "labels.zarr", chunks=(32, 32), margin=16,
        config=config,
    )  # fmt: skip
    labels = zarr.open_array(str(tmp_path / "labels.zarr" / "0"), mode="r")[:]
    assert _same_partition(labels, expected)
    assert count == len(np.unique(expected)) - 1
    # Objects crossed (Y, X) chunk borders and planes: the test covers both merges.
    crossing = set(np.unique(labels[:, :, 31])) & set(np.unique(labels[:, :, 32])) - {0}
    assert any(len({z for z in range(5) if (labels[z] == i).any()}) > 1 for i in crossing)


def test_chunked_time_axis_is_not_linked(stack_and_model, tmp_path):
    from napari_unet.io import create_ome_zarr
    from napari_unet.segment import segment_chunked

    image, net = stack_and_model
    target = create_ome_zarr(
        tmp_path / "series.zarr", shape=image.shape, chunks=(1, 112, 112), dtype=image.dtype,
        axes="tyx",
    )  # fmt: skip
    target[:] = image
    config = SegmentConfig(device="cpu", backend="eager", link_planes=True)
    segment_chunked(net, tmp_path / "series.zarr", tmp_path / "t.zarr", config=config)
    labels = zarr.open_array(str(tmp_path / "t.zarr" / "0"), mode="r")[:]
    apart = segment(net, image, config=SegmentConfig(device="cpu", backend="eager")).labels
    assert _same_partition(labels, apart)


def test_link_lookup_on_a_store_equals_link_planes(tmp_path):
    from napari_unet.segment._link_chunked import link_lookup

    truth = synthetic_cells((6, 64, 64), radius=(6.0, 9.0), spacing=(2.0, 1.0, 1.0), seed=1)[1]
    planes = np.zeros(truth.shape, np.uint32)
    offset = 0
    for z in range(truth.shape[0]):  # per-plane ids, unique over the stack
        ids = np.unique(truth[z])
        lut = np.zeros(int(truth.max()) + 1, np.uint32)
        lut[ids[ids > 0]] = np.arange(1, int((ids > 0).sum()) + 1) + offset
        planes[z] = lut[truth[z]]
        offset += int((ids > 0).sum())
    store = zarr.open_array(
        str(tmp_path / "p.zarr"), mode="w", shape=planes.shape, chunks=(1, 20, 24), dtype="u4"
    )
    store[:] = planes
    linked = link_lookup(store, 0)[planes]
    assert _same_partition(linked, link_planes(planes))


def test_lazy_planes_link_as_they_are_computed(stack_and_model):
    from napari_unet.segment import segment_dask

    image, net = stack_and_model
    options = {"device": "cpu", "backend": "eager"}
    expected = segment(net, image, config=SegmentConfig(**options, link_planes=True)).labels
    apart = segment(net, image, config=SegmentConfig(**options)).labels
    config = SegmentConfig(**options, link_planes=True)
    from napari_unet.segment import lazy_linker

    linker = lazy_linker(image.shape[:1], config)
    lazy = segment_dask(net, image, config=config, linker=linker)
    # Planes asked for out of order, as a user browsing would.
    first = lazy[3].compute()
    assert _same_partition(first, apart[3])  # alone, a plane is its own labelling
    before = linker.version
    for z in (0, 4, 2, 1):
        lazy[z].compute()
    assert linker.version > before
    # Every plane computed: the same objects as linking the whole stack in memory.
    assert _same_partition(lazy.compute(), expected)
    # Drawn again from the planes kept, not predicted again.
    net.head.bias.data += 100.0  # a model that would now see cells everywhere
    try:
        assert _same_partition(lazy.compute(), expected)
    finally:
        net.head.bias.data -= 100.0


def test_lazy_time_series_is_not_linked(stack_and_model):
    from napari_unet.segment import LAZY_ID_STRIDE, segment_dask

    image, net = stack_and_model
    config = SegmentConfig(device="cpu", backend="eager", link_planes=True, axes="TYX")
    labels = segment_dask(net, image, config=config).compute()
    assert labels[1][labels[1] > 0].min() > LAZY_ID_STRIDE  # plane ids, never linked


def test_command_line_says_which_axis_it_links(stack_and_model, tmp_path, capsys):
    import tifffile

    from napari_unet.cli import main
    from napari_unet.io import save_model

    image, net = stack_and_model
    save_model(net, tmp_path / "m.safetensors")
    tifffile.imwrite(tmp_path / "stack.tif", image[:3, :64, :64], photometric="minisblack")
    base = ["predict", "--model", str(tmp_path / "m.safetensors"), str(tmp_path / "stack.tif")]
    base += ["--device", "cpu", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "memory")]) == 0
    assert main([*base, "--out", str(tmp_path / "chunked"), "--chunks", "64"]) == 0
    assert main([*base, "--out", str(tmp_path / "t"), "--axes", "TYX"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "planes of axis 0, 3 planes, linked into 3D objects" in lines[0]
    assert "planes of axis 0 (Z), 3 planes, linked into 3D objects" in lines[1]
    assert "planes not linked (no Z axis" in lines[2]


def test_link_lookup_links_z_within_each_time_point(tmp_path):
    from napari_unet.segment._link_chunked import chunked_z_axis, link_lookup

    truth = synthetic_cells((4, 48, 48), radius=(6.0, 9.0), spacing=(2.0, 1.0, 1.0), seed=2)[1]
    series = np.stack([truth, truth[::-1]])  # (T, Z, Y, X)
    planes = np.zeros(series.shape, np.uint32)
    offset = 0
    for index in np.ndindex(*series.shape[:2]):  # per-plane ids, unique over the series
        planes[index] = np.where(series[index] > 0, series[index] + offset, 0)
        offset += int(series.max())
    store = zarr.open_array(
        str(tmp_path / "t.zarr"), mode="w", shape=planes.shape, chunks=(1, 1, 24, 24), dtype="u4"
    )
    store[:] = planes
    z = chunked_z_axis(["t", "z", "y", "x"], None)
    assert z == 1 and chunked_z_axis(["t", "y", "x"], None) is None
    assert chunked_z_axis(["a", "b", "y", "x"], "ZTYX") == 0
    linked = link_lookup(store, z)[planes]
    for t in range(2):
        assert _same_partition(linked[t], link_planes(planes[t]))
    # No object spans two time points.
    assert not set(np.unique(linked[0])) & set(np.unique(linked[1])) - {0}
