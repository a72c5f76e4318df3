"""Overlap-tile prediction: exact for valid padding, seamless for same padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.models import UNet
from napari_unet.progress import Cancelled
from napari_unet.tiling import (
    _mirror_pad,
    choose_tile_shape,
    iter_predict_tiled,
    predict_stack,
    predict_tiled,
)


@pytest.fixture(scope="module")
def valid_net() -> UNet:
    torch.manual_seed(0)
    return UNet(depth=2, base_channels=4, dropout=0.0).eval()


def whole_image_reference(net: UNet, image: np.ndarray) -> np.ndarray:
    """One forward pass over the whole mirror-padded image (the paper's figure 2)."""
    if image.ndim == 2:
        image = image[None]
    size = image.shape[1:]
    halo = net.halo[0]
    shape = net.valid_input_shape(size)
    pads = [(halo, n - s - halo) for n, s in zip(shape, size, strict=True)]
    padded = _mirror_pad(image.astype(np.float32), pads)
    with torch.inference_mode():
        logits = net(torch.from_numpy(np.ascontiguousarray(padded))[None])
    return torch.softmax(logits, 1)[0, :, : size[0], : size[1]].numpy()


@pytest.mark.parametrize("size", [(37, 53), (101, 77), (64, 64), (5, 3), (1, 9)])
@pytest.mark.parametrize("tile", [None, (44, 44), (52, 76), (60, 60), (100, 100)])
def test_valid_tiling_equals_one_forward_pass_over_the_padded_image(valid_net, size, tile):
    rng = np.random.default_rng(sum(size))
    image = rng.normal(size=size).astype(np.float32)
    tiled = predict_tiled(valid_net, image, tile_shape=tile, device="cpu")
    assert tiled.shape == (2, *size)
    assert tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole_image_reference(valid_net, image), atol=1e-4, rtol=0)


def test_valid_tiling_is_exact_for_the_paper_depth_and_multichannel_input():
    torch.manual_seed(1)
    net = UNet(in_channels=2, num_classes=3, depth=4, base_channels=2, dropout=0.0).eval()
    image = np.random.default_rng(1).normal(size=(2, 211, 197)).astype(np.float32)
    tiled = predict_tiled(net, image, tile_shape=(220, 220), batch_size=3)
    np.testing.assert_allclose(tiled, whole_image_reference(net, image), atol=1e-4, rtol=0)
    assert np.allclose(tiled.sum(0), 1.0, atol=1e-5)


def test_tile_steps_keep_the_pooling_grid_so_exactness_is_not_luck():
    """Stepping tiles by their full output size (not a multiple of 2**depth) is NOT exact."""
    torch.manual_seed(5)
    valid_net = UNet(depth=3, base_channels=4, dropout=0.0).eval()
    image = np.random.default_rng(3).normal(size=(90, 90)).astype(np.float32)
    reference = whole_image_reference(valid_net, image)
    halo = valid_net.halo[0]
    tile = 108
    out = valid_net.output_shape((tile, tile))[0]
    assert out % valid_net.divisor != 0  # 20 = 2 * 8 + 4 for depth 3
    np.testing.assert_allclose(
        predict_tiled(valid_net, image, tile_shape=(tile, tile)), reference, atol=1e-4
    )
    # Naive abutting tiles at steps of `out`.
    padded = _mirror_pad(image[None], [(halo, 3 * out), (halo, 3 * out)])
    naive = np.zeros_like(reference)
    with torch.inference_mode():
        for y in range(0, 90, out):
            for x in range(0, 90, out):
                t = torch.from_numpy(np.ascontiguousarray(padded[:, y : y + tile, x : x + tile]))
                p = torch.softmax(valid_net(t[None]), 1)[0].numpy()
                h, w = min(out, 90 - y), min(out, 90 - x)
                naive[:, y : y + h, x : x + w] = p[:, :h, :w]
    assert np.abs(naive - reference).max() > 1e-3


@pytest.mark.parametrize("depth", [2, 3])
def test_same_padding_tiles_with_default_overlap_equal_one_whole_image_pass(depth):
    torch.manual_seed(depth)
    net = UNet(depth=depth, base_channels=4, padding="same", dropout=0.0).eval()
    assert net.context == {2: 22, 3: 46}[depth]
    image = np.random.default_rng(2).normal(size=(150, 170)).astype(np.float32)
    whole = predict_tiled(net, image, tile_shape=(512, 512))  # one tile covers it
    # Tiles just larger than the default overlap (48 / 96), odd in shape.
    for tile in {2: [(96, 96), (100, 132)], 3: [(160, 168)]}[depth]:
        tiled = predict_tiled(net, image, tile_shape=tile)
        np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)


def test_same_padding_small_overlap_is_blended_without_seams():
    torch.manual_seed(2)
    net = UNet(depth=2, base_channels=4, padding="same", dropout=0.0).eval()
    from scipy import ndimage

    rng = np.random.default_rng(2)
    image = ndimage.gaussian_filter(rng.normal(size=(150, 170)), 3).astype(np.float32)
    image /= image.std()
    whole = predict_tiled(net, image, tile_shape=(512, 512))
    tiled = predict_tiled(net, image, tile_shape=(48, 48), overlap=16)
    assert np.isfinite(tiled).all()
    np.testing.assert_allclose(tiled.sum(0), 1.0, atol=1e-5)
    # Less overlap than the context is approximate, but blending hides seams:
    # the tiled map is no rougher than the whole-image one.
    assert np.abs(tiled - whole).mean() < 0.02
    grad_tiled = np.abs(np.diff(tiled[1], axis=1)).max()
    grad_whole = np.abs(np.diff(whole[1], axis=1)).max()
    assert grad_tiled < 1.5 * grad_whole


def test_tta_averages_the_eight_dihedral_transforms(valid_net):
    image = np.random.default_rng(4).normal(size=(40, 30)).astype(np.float32)
    tta = predict_tiled(valid_net, image, tta=True)
    manual = np.zeros_like(tta)
    for flip in (False, True):
        for k in range(4):
            t = np.rot90(image, k)
            t = t[:, ::-1] if flip else t
            p = whole_image_reference(valid_net, np.ascontiguousarray(t))
            p = p[:, :, ::-1] if flip else p
            manual += np.rot90(p, -k, axes=(1, 2))
    np.testing.assert_allclose(tta, manual / 8, atol=1e-4)


def test_progress_counts_every_tile_and_cancel_stops_with_an_exception(valid_net):
    image = np.zeros((100, 100), np.float32)
    calls = []
    predict_tiled(
        valid_net, image, tile_shape=(44, 44), progress=lambda d, t: calls.append((d, t))
    )
    total = calls[-1][1]
    assert total > 1
    assert calls == [(i, total) for i in range(1, total + 1)]

    seen = []
    with pytest.raises(Cancelled, match="cancelled"):
        predict_tiled(
            valid_net,
            image,
            tile_shape=(44, 44),
            progress=lambda d, t: seen.append(d),
            cancel=lambda: len(seen) >= 2,
        )
    assert seen == [1, 2]  # stopped within one tile of the request


def test_generator_form_yields_and_returns_the_same_result(valid_net):
    image = np.random.default_rng(5).normal(size=(50, 50)).astype(np.float32)
    events = iter_predict_tiled(valid_net, image, tile_shape=(44, 44))
    dones = []
    while True:
        try:
            dones.append(next(events).done)
        except StopIteration as stop:
            result = stop.value
            break
    assert dones == sorted(dones) and len(dones) > 1
    np.testing.assert_array_equal(result, predict_tiled(valid_net, image, tile_shape=(44, 44)))


def test_predict_stack_handles_zt_stacks_and_channel_axes():
    torch.manual_seed(3)
    net = UNet(in_channels=2, depth=1, base_channels=2, dropout=0.0).eval()
    rng = np.random.default_rng(6)
    data = rng.normal(size=(3, 2, 2, 20, 24)).astype(np.float32)  # (T, C, Z, Y, X)
    probs = predict_stack(net, data, channel_axis=1)
    assert probs.shape == (2, 3, 2, 20, 24)
    np.testing.assert_allclose(probs[:, 1, 0], predict_tiled(net, data[1, :, 0]), atol=1e-6)
    single = UNet(depth=1, base_channels=2, dropout=0.0).eval()
    zstack = rng.normal(size=(4, 20, 24)).astype(np.float32)
    probs = predict_stack(single, zstack)
    assert probs.shape == (2, 4, 20, 24)
    np.testing.assert_allclose(probs[:, 2], predict_tiled(single, zstack[2]), atol=1e-6)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((2, 10, 10)), r"shape \(2, 10, 10\), expected \(Y, X\) or \(1, Y, X\)"),
        (np.zeros(10), r"shape \(10,\), expected \(Y, X\)"),
        (np.zeros((0, 5)), r"shape \(0, 5\) is empty"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN or infinite"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), "NaN or infinite"),
        (np.array([["a", "b"], ["c", "d"]]), "dtype <U1, expected a real numeric"),
        (np.zeros((3, 3), dtype=complex), "dtype complex128"),
    ],
)
def test_bad_images_raise_value_errors_naming_shapes(valid_net, image, match):
    with pytest.raises(ValueError, match=match):
        predict_tiled(valid_net, image)


def test_multichannel_model_rejects_wrong_channel_count():
    net = UNet(in_channels=3, depth=1, base_channels=2)
    with pytest.raises(ValueError, match=r"shape \(2, 8, 8\), expected \(3, Y, X\)"):
        predict_tiled(net, np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"has 8 channel\(s\) along `channel_axis` 3"):
        predict_stack(net, np.zeros((2, 3, 8, 8)), channel_axis=3)


def test_channel_axis_may_be_last_as_in_rgb_images():
    torch.manual_seed(4)
    net = UNet(in_channels=3, depth=1, base_channels=2, dropout=0.0).eval()
    rgb = np.random.default_rng(8).normal(size=(30, 40, 3)).astype(np.float32)
    probs = predict_stack(net, rgb, channel_axis=-1)
    assert probs.shape == (2, 30, 40)
    np.testing.assert_allclose(probs, predict_tiled(net, np.moveaxis(rgb, -1, 0)), atol=1e-6)


def test_automatic_tiles_are_valid_tight_and_fit_the_budget():
    net = UNet()  # the paper network: 64 base channels
    tile = choose_tile_shape(net, (2048, 2048), "cpu")
    assert net.is_valid_input_shape(tile)
    # Two tiles per axis cover 2048 with 1024-pixel steps: no wasted third row.
    assert tile == (1212, 1212)
    small = choose_tile_shape(net, (512, 512), "cpu", memory_budget=100 * 2**20)
    assert net.is_valid_input_shape(small) and small[0] < 512
    # An image smaller than a tile gets the smallest tile that covers it.
    tiny = choose_tile_shape(net, (30, 40), "cpu")
    assert net.output_shape(tiny)[0] >= 30 and tiny[0] == net.valid_input_shape((32, 32))[0]


def test_tile_budget_uses_the_models_own_activation_footprint():
    from napari_unet.models import UNetPlusPlus

    plus = UNetPlusPlus(base_channels=32)
    net = UNet(base_channels=32, padding="same")
    budget = 512 * 2**20
    side_plus = choose_tile_shape(plus, (4096, 4096), "cpu", memory_budget=budget)[0]
    side_net = choose_tile_shape(net, (4096, 4096), "cpu", memory_budget=budget)[0]
    # U-Net++ keeps more activations per pixel, so it gets smaller tiles.
    assert side_plus < side_net
    floats = plus.floats_per_pixel_per_base_channel
    assert 4 * floats * 32 * side_plus**2 <= budget


def test_input_image_is_not_modified(valid_net):
    image = np.random.default_rng(7).normal(size=(30, 30)).astype(np.float32)
    before = image.copy()
    predict_tiled(valid_net, image, tta=True)
    np.testing.assert_array_equal(image, before)
