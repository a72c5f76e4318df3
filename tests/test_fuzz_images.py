"""Property-based fuzzing of images and labels through the public functions.

Every generated case must end in success or in a documented error: a
``ValueError`` (``napari_unet.errors.InputError`` is one) naming the
problem. Anything else (IndexError, ZeroDivisionError, a NumPy or SciPy
internal error, a crash) is a bug. Shapes cover 0-sized, 1 x N, N x 1, 3D to
5D; dtypes bool, unsigned and signed integers, float16/32/64 with NaN and
infinity, complex and object.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from napari_unet import io  # noqa: E402
from napari_unet.metrics import average_precision, dice_score, pixel_error  # noqa: E402
from napari_unet.models import UNet  # noqa: E402
from napari_unet.postprocess import probabilities_to_labels  # noqa: E402
from napari_unet.tiling import predict_stack, predict_tiled  # noqa: E402
from napari_unet.weights import weight_map  # noqa: E402

FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same cases on every run: CI stays reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

DTYPES = st.sampled_from(
    [
        np.bool_,
        np.uint8,
        np.uint16,
        np.int16,
        np.int32,
        np.int64,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
        np.complex64,
    ]
)
# Small sides, including 0 and 1; up to 5 axes.
SHAPES = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=9) | st.sampled_from(
    [(0, 0), (0, 7), (7, 0), (1, 1), (1, 23), (23, 1), (2, 0, 5), (1, 1, 1, 1, 1)]
)


def _arrays(shapes=SHAPES, dtypes=DTYPES):
    def build(dtype_shape):
        dtype, shape = dtype_shape
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            elements = st.floats(width=8 * dtype.itemsize if dtype.itemsize <= 8 else 64)
        elif dtype.kind == "c":
            elements = st.complex_numbers(width=8 * dtype.itemsize, allow_nan=True)
        else:
            elements = None
        return hnp.arrays(dtype, shape, elements=elements)

    return st.tuples(dtypes, shapes).flatmap(build)


@pytest.fixture(scope="module")
def net() -> UNet:
    torch.manual_seed(0)
    return UNet(depth=1, base_channels=2, dropout=0.0).eval()


def _ends_cleanly(fn, *args, **kwargs):
    """Run; return the result or None after a documented error (ValueError)."""
    try:
        return fn(*args, **kwargs)
    except ValueError as err:
        assert str(err), f"{type(err).__name__} without a message"
        return None


@pytest.mark.slow
@FUZZ
@given(image=_arrays(shapes=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12)))
def test_predict_tiled_any_image(net, image):
    probs = _ends_cleanly(predict_tiled, net, image, tile_shape=(32, 32), device="cpu")
    if probs is not None:
        assert probs.shape == (2, *image.shape[-2:])
        assert np.isfinite(probs).all()


@FUZZ
@given(data=_arrays(), channel_axis=st.none() | st.integers(-6, 5))
def test_predict_stack_any_array(data, channel_axis):
    torch.manual_seed(0)
    model = UNet(in_channels=1 if channel_axis is None else 2, depth=1, base_channels=2).eval()
    probs = _ends_cleanly(
        predict_stack, model, data, channel_axis=channel_axis, tile_shape=(32, 32), device="cpu"
    )
    if probs is not None:
        assert probs.shape[0] == 2 and np.isfinite(probs).all()


@FUZZ
@given(labels=_arrays())
def test_weight_map_any_labels(labels):
    weights = _ends_cleanly(weight_map, labels, sigma=2.0)
    if weights is not None:
        assert weights.shape == labels.shape and np.isfinite(weights).all()


@FUZZ
@given(probs=_arrays(), threshold=st.floats(-1, 2) | st.just(float("nan")))
def test_probabilities_to_labels_any_array(probs, threshold):
    labels = _ends_cleanly(probabilities_to_labels, probs, threshold=threshold)
    if labels is not None:
        assert labels.shape == probs.shape[1:]
        assert np.issubdtype(labels.dtype, np.integer)


@FUZZ
@given(pair=_arrays().flatmap(lambda a: st.tuples(st.just(a), _arrays() | st.just(a))))
def test_metrics_any_pair(pair):
    truth, prediction = pair
    for metric in (average_precision, dice_score, pixel_error):
        _ends_cleanly(metric, truth, prediction)


@FUZZ
@given(array=_arrays(), suffix=st.sampled_from([".tif", ".png", ".jpg"]))
def test_write_then_read_image_any_array(tmp_path, array, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.unlink(missing_ok=True)  # tmp_path is shared by the examples
    try:
        io.write_image(path, array)
    except ValueError as err:
        assert str(err) and not path.exists()
        return
    back = io.read_image(path)  # never refuses a file it wrote
    if suffix != ".jpg":  # JPEG is lossy
        assert back.shape == array.shape and back.dtype == array.dtype
        np.testing.assert_array_equal(back, array)


@FUZZ
@given(
    content=st.binary(max_size=200)
    | st.builds(lambda tail: b"II*\x00" + tail, st.binary(max_size=200))
    | st.builds(lambda tail: b"MM\x00*" + tail, st.binary(max_size=200))
    | st.builds(lambda tail: b"\x89PNG\r\n\x1a\n" + tail, st.binary(max_size=200)),
    suffix=st.sampled_from([".tif", ".png"]),
)
def test_read_image_any_bytes(tmp_path, content, suffix):
    # Damaged, truncated and header-only files: an image or an InputError naming the file.
    from napari_unet.errors import InputError

    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(content)
    try:
        image = io.read_image(path)
    except InputError as err:
        assert path.name in str(err)
        return
    assert image.size > 0
