"""Memory bounded by tiles: in-memory prediction holds one output array plus tile buffers."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from napari_unet.memory import available_memory, choose_in_memory, estimate_prediction_memory
from napari_unet.models import UNet
from napari_unet.normalize import Normalization
from napari_unet.postprocess import probabilities_to_labels
from napari_unet.tiling import predict_stack, predict_tiled

# The "auto" backend may switch to ONNX Runtime mid-run (by timing), which
# allocates its own buffers: these tests measure the tiling, so eager it is.
EAGER = {"backend": "eager", "precision": "fp32"}


def _net(padding: str = "valid") -> UNet:
    torch.manual_seed(0)
    return UNet(depth=2, base_channels=4, dropout=0.0, padding=padding).eval()


def _cells(side: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    cells = (np.sin(yy / 9.0) * np.sin(xx / 11.0) > 0.3) * 120.0
    return (cells + rng.normal(50, 20, cells.shape)).clip(0, 255).astype(np.uint8)


def _traced_peak(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("padding", "how"),
    [("valid", "stack"), ("valid", "tiled"), ("same", "stack"), ("valid", "tta")],
)
def test_prediction_holds_one_output_array_plus_tile_buffers(padding, how):
    # Issue 18 item 8: ~24-33 bytes per pixel (6 float copies) before; now the
    # output's 8 bytes per pixel (2 classes) plus tiles.
    net = _net(padding)
    image = _cells(640)
    tile = (128, 128)
    if how == "stack":
        run = lambda: predict_stack(net, image[np.newaxis], tile_shape=tile, **EAGER)  # noqa: E731
    else:
        run = lambda: predict_tiled(  # noqa: E731
            net, image, tile_shape=tile, tta=how == "tta", **EAGER
        )
    probs, peak = _traced_peak(run)
    tile_buffers = 2**20  # a few 128² float32 tiles and their probabilities
    assert peak <= probs.nbytes + tile_buffers, (peak / image.size, probs.nbytes / image.size)


def test_nan_check_and_float_conversion_need_no_image_sized_copy():
    net = _net()
    image = np.random.default_rng(1).normal(size=(512, 512))  # float64: 8 bytes per pixel
    probs, peak = _traced_peak(lambda: predict_tiled(net, image, tile_shape=(128, 128), **EAGER))
    assert peak <= probs.nbytes + 2**20 + 4 * 2**20 // 2  # + the NaN check's row blocks


def test_estimate_covers_the_measured_pipeline_and_is_not_wildly_above():
    net = _net()
    image = _cells(512)

    def pipeline():
        data = Normalization.from_dict(None)(image, channel_axis=None)
        probs = predict_stack(net, data, tile_shape=(128, 128), **EAGER)
        return probabilities_to_labels(probs, threshold=0.5, spatial_dims=2)

    _, peak = _traced_peak(pipeline)
    estimate = estimate_prediction_memory(image.shape, net, tile_shape=(128, 128))
    # Tracing sees NumPy buffers only; the estimate adds the tiles' activations.
    assert peak <= estimate <= 3 * peak + 2**22, (peak, estimate)


def test_estimate_grows_with_pixels_channels_and_classes():
    net = _net()
    small = estimate_prediction_memory((512, 512), net, tile_shape=(128, 128))
    large = estimate_prediction_memory((2048, 2048), net, tile_shape=(128, 128))
    assert 10 < large / small <= 16  # 16x the pixels; labelling has a fixed part
    colour = UNet(in_channels=3, num_classes=3, depth=2, base_channels=4)
    rgb = estimate_prediction_memory((512, 512, 3), colour, channel_axis=-1, labels=False)
    grey = estimate_prediction_memory((512, 512), net, labels=False)
    assert rgb > grey


def test_in_memory_or_chunked_is_decided_by_memory_not_file_size():
    net = _net()
    # 0.9 GiB of uint8 pixels: the old fixed 1 GiB rule predicted it in memory
    # (needing ~25 GiB); with 8 GiB available it now goes chunked.
    side = 31000
    assert not choose_in_memory((side, side), net, available=8 * 2**30)
    assert choose_in_memory((side, side), net, available=512 * 2**30)
    assert choose_in_memory((512, 512), net, available=1 * 2**30)
    free = available_memory()
    assert free is None or free > 0


def test_tiles_where_the_halo_dominates_warn_with_the_factor_and_a_better_tile():
    import warnings

    from napari_unet.errors import RedundantComputeWarning

    net = _net()  # depth 2: 20-pixel halo
    image = _cells(96)
    with pytest.warns(RedundantComputeWarning, match=r"121\.0x .* a tile of \(\d+, \d+\)"):
        small = predict_tiled(net, image, tile_shape=(44, 44))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RedundantComputeWarning)
        default = predict_tiled(net, image)
        predict_tiled(net, image, tile_shape=(128, 128))  # 88² kept of 128²: 2.1x
    np.testing.assert_allclose(small, default, atol=1e-4)


def test_small_chunks_warn_with_the_factor_and_a_better_chunk_size():
    import warnings

    da = pytest.importorskip("dask.array")
    from napari_unet.errors import RedundantComputeWarning
    from napari_unet.tiling import predict_dask

    net = _net()  # depth 2: 20-pixel halo, 24 with the pooling cell
    image = da.from_array(_cells(128), chunks=16)
    with pytest.warns(RedundantComputeWarning, match=r"\d+\.\dx the pixels .* --chunks \d+"):
        small = predict_dask(net, image, tile_shape=(128, 128))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RedundantComputeWarning)
        large = predict_dask(net, image.rechunk(64), tile_shape=(128, 128))
    np.testing.assert_allclose(small.compute(), large.compute(), atol=1e-4)


def test_huge_finite_intensities_give_a_clear_error_not_nan_probabilities():
    # Found by tests/test_fuzz_images.py: a float32 pixel of 7.9e37 made NaN probabilities.
    image = np.full((24, 24), 7.8755456e37, np.float32)
    with pytest.raises(ValueError, match=r"not finite .* 7\.88e\+37 .* normalise the image"):
        predict_tiled(_net(), image, tile_shape=(64, 64), **EAGER)
