"""Tests for napari_unet.augment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from napari_unet.augment import (
    Compose,
    ElasticDeform,
    GaussianNoise,
    RandomContrast,
    RandomFlip,
    RandomGamma,
    RandomRot90,
    RandomShift,
    Sample,
    elastic_deform,
)


def blobs(shape: tuple[int, ...], seed: int, dtype=np.int64, offset: int = 0) -> np.ndarray:
    """Random instance labels with ids ``offset + 1 ..``, background 0."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, dtype=np.int64)
    n = 12
    seeds[tuple(rng.integers(0, s, n) for s in shape)] = np.arange(1, n + 1)
    dist, nearest = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[tuple(nearest)]
    labels[dist > 6] = 0
    labels = labels.astype(dtype)
    labels[labels > 0] += np.array(offset, dtype=dtype)
    return labels


def smooth(positions: list[np.ndarray]) -> np.ndarray:
    """A slowly varying function of position, which any cubic interpolation gets right."""
    value = np.zeros(positions[0].shape)
    for axis, p in enumerate(positions):
        value += np.sin(p / (6.0 + 2 * axis) + axis)
    return value


def mirror(p: np.ndarray, n: int) -> np.ndarray:
    period = 2 * (n - 1)
    folded = np.mod(p, period)
    return np.minimum(folded, period - folded)


def reference_field(seed: int, shape: tuple[int, ...], grid: int, sigma: float) -> np.ndarray:
    """(ndim, *shape) displacements from the documented recipe, built independently."""
    ndim = len(shape)
    coarse = torch.from_numpy(
        np.random.default_rng(seed).normal(0.0, sigma, size=(1, ndim, *([grid] * ndim)))
    ).float()
    if ndim == 2:
        field = F.interpolate(coarse, size=shape, mode="bicubic", align_corners=True)
        return field[0].numpy()
    # cubic convolution is separable: (Y, X) first, then Z
    planes = coarse.reshape(1, ndim * grid, grid, grid)
    planes = F.interpolate(planes, size=shape[1:], mode="bicubic", align_corners=True)
    columns = planes.reshape(ndim, 1, grid, shape[1] * shape[2])
    field = F.interpolate(
        columns, size=(shape[0], shape[1] * shape[2]), mode="bicubic", align_corners=True
    )
    return field.reshape(ndim, *shape).numpy()


@pytest.mark.parametrize("shape", [(48, 56), (14, 24, 28)])
def test_matches_independent_reference(shape):
    seed, grid, sigma = 3, 3, 4.0
    field = reference_field(seed, shape, grid, sigma)
    source = [
        np.arange(n).reshape([-1 if a == i else 1 for a in range(len(shape))]) + field[i]
        for i, n in enumerate(shape)
    ]
    grid_points = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    image = smooth(grid_points)[None].astype(np.float32)
    labels = blobs(shape, seed=4)

    out_image, out_labels, _ = elastic_deform(image, labels, grid=grid, sigma=sigma, rng=seed)

    # labels: nearest neighbour at the mirrored source position (scipy "mirror" mode)
    expected_labels = ndi.map_coordinates(labels, source, order=0, mode="mirror")
    agree = np.mean(out_labels == expected_labels)
    assert agree > 0.999  # only rounding ties at exactly .5 may differ
    # image: the smooth function at the mirrored source position, away from the
    # mirror's kink at the border
    expected = smooth([mirror(p, n) for p, n in zip(source, shape, strict=True)])
    inside = np.all([(p > 2) & (p < n - 3) for p, n in zip(source, shape, strict=True)], axis=0)
    assert inside.mean() > 0.3
    # PyTorch's cubic convolution (a = -0.75) alone is off by up to 0.014 on this
    # function, trilinear by about 0.007; a swapped axis or sign would be off by ~1
    tolerance = 2e-2
    np.testing.assert_allclose(out_image[0][inside], expected[inside], atol=tolerance)
    assert np.abs(out_image[0] - image[0]).max() > 0.2  # it did deform


@pytest.mark.parametrize(
    ("dtype", "offset"),
    [
        (np.uint8, 200),
        (np.uint16, 60000),
        (np.uint32, 2**31),
        (np.int64, 2**40 + 1),
        (np.uint64, 2**63),
    ],
)
def test_label_ids_preserved_exactly(dtype, offset):
    labels = blobs((40, 44), seed=5, dtype=dtype, offset=offset)
    image = np.zeros((1, 40, 44), dtype=np.float32)
    _, out, _ = elastic_deform(image, labels, sigma=6.0, rng=0)
    assert out.dtype == labels.dtype
    assert set(np.unique(out)) <= set(np.unique(labels))
    assert len(np.unique(out)) >= len(np.unique(labels)) - 2  # cells are moved, not lost
    assert not np.array_equal(out, labels)
    assert int(out.max()) == int(labels.max())  # no float32 rounding of large ids


def test_weights_follow_labels_and_stay_exact():
    labels = blobs((40, 40), seed=6)
    weights = np.where(labels > 0, 2.5, 0.0).astype(np.float32)
    weights[:, :8] = 0.0
    image = np.random.default_rng(0).random((2, 40, 40), dtype=np.float32)
    out_image, out_labels, out_weights = elastic_deform(image, labels, weights, rng=1)
    assert out_image.shape == (2, 40, 40)
    assert set(np.unique(out_weights)) <= {0.0, 2.5}
    np.testing.assert_array_equal(out_weights[out_labels == 0], 0.0)


@pytest.mark.parametrize("shape", [(1, 20, 24), (2, 6, 10, 12)])
def test_zero_sigma_is_identity(shape):
    image = np.random.default_rng(1).random(shape, dtype=np.float32)
    labels = blobs(shape[1:], seed=7)
    out_image, out_labels, out_weights = elastic_deform(
        image, labels, labels.astype(np.float32), sigma=0.0, rng=0
    )
    np.testing.assert_allclose(out_image, image, atol=1e-5)
    np.testing.assert_array_equal(out_labels, labels)
    np.testing.assert_array_equal(out_weights, labels)


def test_seeded_and_not_modifying_inputs():
    image = np.random.default_rng(2).random((1, 32, 32), dtype=np.float32)
    labels = blobs((32, 32), seed=8)
    before = image.copy(), labels.copy()
    a = elastic_deform(image, labels, rng=11)
    b = elastic_deform(image, labels, rng=np.random.default_rng(11))
    c = elastic_deform(image, labels, rng=12)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)
    np.testing.assert_array_equal(image, before[0])
    np.testing.assert_array_equal(labels, before[1])


def test_tensor_in_tensor_out_and_dtypes():
    image = torch.rand(1, 24, 24, dtype=torch.float64)
    labels = torch.from_numpy(blobs((24, 24), seed=9))
    out_image, out_labels, out_weights = elastic_deform(image, labels, rng=0)
    assert isinstance(out_image, torch.Tensor) and out_image.dtype == torch.float64
    assert isinstance(out_labels, torch.Tensor) and out_labels.dtype == labels.dtype
    assert out_weights is None
    out_uint8, _, _ = elastic_deform(np.zeros((1, 24, 24), dtype=np.uint8), rng=0)
    assert isinstance(out_uint8, np.ndarray) and out_uint8.dtype == np.float32


def test_batched_each_sample_own_deformation():
    labels = np.stack([blobs((32, 36), seed=10)] * 3)
    image = np.repeat(labels[:, None].astype(np.float32), 2, axis=1)
    out_image, out_labels, _ = elastic_deform(image, labels, rng=0, spatial_dims=2)
    assert out_image.shape == (3, 2, 32, 36) and out_labels.shape == (3, 32, 36)
    assert not np.array_equal(out_labels[0], out_labels[1])
    assert set(np.unique(out_labels)) <= set(np.unique(labels))


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((np.zeros((8, 8)),), {}, "`image`"),
        ((np.zeros((1, 8, 8)), np.zeros((8, 9), int)), {}, r"`labels` \(shape"),
        ((np.zeros((1, 8, 8)), None, np.zeros((7, 8))), {}, r"`weights` \(shape"),
        ((np.zeros((1, 8, 8)),), {"grid": 1}, "`grid`"),
        ((np.zeros((1, 8, 8)),), {"sigma": -1.0}, "`sigma`"),
        ((np.zeros((1, 8, 8)),), {"spatial_dims": 4}, "`spatial_dims`"),
        ((np.zeros((1, 8, 8)),), {"spatial_dims": 3}, "`image`"),
        ((np.zeros((1, 8, 8)),), {"rng": "seed"}, "`rng`"),
    ],
)
def test_elastic_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        elastic_deform(*args, **kwargs)


def _as_image(labels: np.ndarray) -> np.ndarray:
    return labels[None].astype(np.float32)


@pytest.mark.parametrize("shape", [(20, 20), (6, 12, 12)])
def test_geometric_transforms_move_everything_together(shape):
    labels = blobs(shape, seed=11)
    weights = labels.astype(np.float32) * 0.5
    augment = Compose([RandomFlip(), RandomRot90(), RandomShift(max_shift=5)])
    changed = 0
    for seed in range(6):
        image, out_labels, out_weights = augment(_as_image(labels), labels, weights, rng=seed)
        np.testing.assert_array_equal(image[0], out_labels)
        np.testing.assert_array_equal(out_weights, out_labels * 0.5)
        changed += not np.array_equal(out_labels, labels)
    assert changed >= 4


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64, np.int32])
def test_flip_and_rot90_permute_pixels(dtype):
    labels = blobs((16, 16), seed=12, dtype=dtype, offset=100)
    for seed in range(4):
        _, out, _ = Compose([RandomFlip(), RandomRot90()])(_as_image(labels), labels, rng=seed)
        assert out.dtype == labels.dtype
        np.testing.assert_array_equal(np.sort(out, axis=None), np.sort(labels, axis=None))


def test_shift_mirrors_at_the_border():
    x = np.arange(10 * 6).reshape(10, 6)
    padded = np.pad(x, ((3, 3), (0, 0)), mode="reflect")  # numpy "reflect" = mirror about edge
    candidates = [padded[3 - s : 13 - s] for s in range(-3, 4)]
    seen = set()
    for seed in range(12):
        _, out, _ = RandomShift(max_shift=(3, 0))(_as_image(x), x, rng=seed)
        matches = [
            s for s, c in zip(range(-3, 4), candidates, strict=True) if np.array_equal(out, c)
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) >= 3


def test_elastic_transform_and_probability():
    labels = blobs((24, 24), seed=13)
    image = _as_image(labels)
    out = ElasticDeform(sigma=5.0)(image, labels, rng=0)
    assert not np.array_equal(out.labels, labels)
    same = ElasticDeform(sigma=5.0, p=0.0)(image, labels, rng=0)
    np.testing.assert_array_equal(same.labels, labels)


def test_contrast_keeps_the_mean_and_scales_spread():
    image = np.random.default_rng(3).random((2, 16, 16))
    out = RandomContrast(contrast=(0.5, 0.5))(image, rng=0).image
    np.testing.assert_allclose(out.mean(axis=(1, 2)), image.mean(axis=(1, 2)))
    np.testing.assert_allclose(out.std(axis=(1, 2)), 0.5 * image.std(axis=(1, 2)))
    shifted = RandomContrast(contrast=(1, 1), brightness=(2, 2))(image, rng=0).image
    np.testing.assert_allclose(shifted, image + 2)


def test_gamma_keeps_range_and_order():
    image = np.random.default_rng(4).random((1, 16, 16)) * 5 + 3
    out = RandomGamma(gamma_range=(2.0, 2.0))(image, rng=0).image
    np.testing.assert_allclose([out.min(), out.max()], [image.min(), image.max()])
    np.testing.assert_array_equal(np.argsort(out, axis=None), np.argsort(image, axis=None))
    expected = ((image - image.min()) / np.ptp(image)) ** 2 * np.ptp(image) + image.min()
    np.testing.assert_allclose(out, expected)
    with pytest.raises(ValueError, match="`gamma_range`"):
        RandomGamma(gamma_range=(0.0, 1.0))


def test_noise_changes_image_only_and_is_seeded():
    image = torch.zeros(1, 64, 64)
    labels = torch.from_numpy(blobs((64, 64), seed=14))
    noise = GaussianNoise(std=(0.2, 0.2))
    a = noise(image, labels, rng=5)
    b = noise(image, labels, rng=5)
    assert isinstance(a.image, torch.Tensor)
    assert torch.equal(a.image, b.image)
    assert torch.equal(a.labels, labels)
    assert a.image.std().item() == pytest.approx(0.2, rel=0.1)


def test_compose_is_reproducible_with_numpy_and_torch():
    labels = blobs((32, 32), seed=15)
    image = np.random.default_rng(5).random((1, 32, 32), dtype=np.float32)
    augment = Compose(
        [
            RandomFlip(),
            RandomRot90(),
            RandomShift(4),
            ElasticDeform(sigma=4.0),
            RandomContrast(),
            RandomGamma(),
            GaussianNoise(),
        ]
    )
    a = augment(image, labels, rng=21)
    b = augment(torch.from_numpy(image), torch.from_numpy(labels), rng=21)
    c = augment(image, labels, rng=22)
    assert isinstance(a, Sample) and isinstance(a.image, np.ndarray)
    assert isinstance(b.image, torch.Tensor)
    np.testing.assert_array_equal(a.image, b.image.numpy())
    np.testing.assert_array_equal(a.labels, b.labels.numpy())
    assert not np.array_equal(a.image, c.image)
    assert a.weights is None
    assert "ElasticDeform" in repr(augment)
    with pytest.raises(ValueError, match="`transforms`"):
        Compose([lambda sample, rng: sample])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    labels = torch.from_numpy(blobs((64, 64), seed=16))
    image = torch.rand(1, 64, 64)
    cpu = elastic_deform(image, labels, rng=3)
    gpu = elastic_deform(image.cuda(), labels.cuda(), rng=3)
    assert gpu.image.is_cuda and gpu.labels.is_cuda
    torch.testing.assert_close(gpu.image.cpu(), cpu.image, atol=1e-4, rtol=0)
    assert (gpu.labels.cpu() == cpu.labels).float().mean() > 0.999


def test_small_deformations_run_on_fewer_threads_and_restore_the_count(monkeypatch):
    import threading

    from napari_unet import augment

    seen = []
    real = augment._deform
    monkeypatch.setattr(
        augment, "_deform", lambda *a: seen.append(torch.get_num_threads()) or real(*a)
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        image = np.random.default_rng(0).random((1, 64, 64), dtype=np.float32)
        workers = [
            threading.Thread(target=elastic_deform, args=(image,), kwargs={"rng": i})
            for i in range(4)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert seen == [1] * 4
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
