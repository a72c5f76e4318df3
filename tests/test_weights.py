"""Tests for napari_unet.weights: exactness against the per-cell reference."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet import weights
from napari_unet.weights import (
    border_cutoff,
    instances_to_classes,
    separation_borders,
    weight_map,
)


@pytest.fixture(params=["numba", "scipy"])
def path(request, monkeypatch):
    """Run a test on the compiled (numba) path, then on the SciPy fallback."""
    if request.param == "numba":
        pytest.importorskip("numba", reason="numba is not installed: only the SciPy path runs")
        # the compiled path is the default: check it is the one being tested
        assert weights._compiled_border_term() is not None
    else:
        monkeypatch.setattr(weights, "_compiled_border_term", lambda: None)
    return request.param


def touching_cells(shape: tuple[int, ...], n: int, radius: float, seed: int) -> np.ndarray:
    """Voronoi regions of random seeds, cut to ``radius``: cells that touch along edges."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, dtype=np.int32)
    seeds[tuple(rng.integers(0, s, n) for s in shape)] = np.arange(1, n + 1)
    dist, nearest = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[tuple(nearest)]
    labels[dist > radius] = 0
    return labels


def reference_border(
    labels: np.ndarray, *, w0: float, sigma: float, spacing: tuple[float, ...] | None = None
) -> np.ndarray:
    """The straightforward definition: one distance transform per cell, two smallest."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if len(ids) < 2:
        return np.zeros(labels.shape)
    dists = np.stack([ndi.distance_transform_edt(labels != i, sampling=spacing) for i in ids])
    dists.sort(axis=0)
    border = w0 * np.exp(-((dists[0] + dists[1]) ** 2) / (2 * sigma**2))
    return np.where(labels == 0, border, 0.0)


@pytest.mark.parametrize(
    ("w0", "sigma"), [(10.0, 5.0), (100.0, 2.0), (1.0, 12.0), (1e4, 3.0), (5.0, 1.5)]
)
def test_matches_reference_2d(w0, sigma, path):
    labels = touching_cells((96, 110), 30, radius=9, seed=1)
    expected = 1.0 + reference_border(labels, w0=w0, sigma=sigma)
    got = weight_map(labels, w0=w0, sigma=sigma, class_weights=None)
    assert got.dtype == np.float32
    assert got.shape == labels.shape
    # the border term must matter here, or the comparison proves nothing
    assert expected.max() > 1 + 0.1 * w0
    # against the reference rounded to the output's float32: for w0 = 1e4 one
    # float32 step near the maximum is already 1e-3
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=0, atol=1e-4)


def test_matches_reference_3d(path):
    labels = touching_cells((20, 36, 40), 14, radius=8, seed=2)
    expected = 1.0 + reference_border(labels, w0=10.0, sigma=4.0)
    got = weight_map(labels, w0=10.0, sigma=4.0, class_weights=None)
    assert expected.max() > 5
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("shape", "spacing"), [((64, 72), (1.0, 0.4)), ((14, 40, 36), (2.5, 0.7, 0.7))]
)
def test_matches_reference_anisotropic(shape, spacing, path):
    labels = touching_cells(shape, 16, radius=7, seed=3)
    expected = 1.0 + reference_border(labels, w0=10.0, sigma=3.0, spacing=spacing)
    got = weight_map(labels, w0=10.0, sigma=3.0, class_weights=None, spacing=spacing)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    isotropic = weight_map(labels, w0=10.0, sigma=3.0, class_weights=None)
    assert np.abs(isotropic - got).max() > 0.1


def test_random_touching_cells_match_reference(path):
    """Small random cases, 2D and 3D, gaps, dots and anisotropy: both paths, one tolerance."""
    rng = np.random.default_rng(17)
    for case in range(24):
        ndim = 2 if case % 3 else 3
        shape = tuple(int(n) for n in rng.integers(3, 36 if ndim == 2 else 14, ndim))
        labels = touching_cells(shape, int(rng.integers(2, 20)), rng.uniform(1, 10), seed=case)
        if case % 4 == 0:  # scattered holes: many small gaps and single-pixel cell pieces
            labels[rng.random(shape) < 0.3] = 0
        spacing = tuple(rng.uniform(0.3, 3, ndim)) if case % 2 else None
        w0, sigma = float(rng.choice([1.0, 10.0, 1e3])), float(rng.uniform(0.5, 8))
        expected = 1.0 + reference_border(labels, w0=w0, sigma=sigma, spacing=spacing)
        got = weight_map(labels, w0=w0, sigma=sigma, class_weights=None, spacing=spacing)
        np.testing.assert_allclose(
            got, expected.astype(np.float32), rtol=0, atol=1e-4, err_msg=f"case {case}"
        )


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (1, 6, 7), (6, 1, 7), (6, 7, 1)])
def test_thin_images_match_reference(shape, path):
    labels = (np.arange(np.prod(shape)).reshape(shape) % 4 == 1) * np.arange(
        np.prod(shape)
    ).reshape(shape)
    expected = 1.0 + reference_border(labels, w0=10.0, sigma=2.0)
    got = weight_map(labels, w0=10.0, sigma=2.0, class_weights=None)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_importing_weights_does_not_import_numba():
    code = (
        "import sys, napari_unet, napari_unet.weights\n"
        "assert 'numba' not in sys.modules, 'importing napari_unet.weights loaded numba'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_numba_the_scipy_path_is_used():
    code = (
        "import sys\n"
        "sys.modules['numba'] = None  # makes `import numba` fail\n"
        "import numpy as np\n"
        "from napari_unet import _nearest_cells, weights\n"
        "assert not _nearest_cells.AVAILABLE and weights._compiled_border_term() is None\n"
        "labels = np.zeros((5, 7), dtype=np.uint8)\n"
        "labels[:, :3], labels[:, 4:] = 1, 2\n"
        "w = weights.weight_map(labels, class_weights=None)\n"
        "assert abs(w[2, 3] - (1 + 10 * np.exp(-4 / 50))) < 1e-5, w[2, 3]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_border_term_only_on_background(path):
    labels = np.zeros((9, 11), dtype=np.uint8)
    labels[:, :4] = 1
    labels[:, 5:] = 2
    w = weight_map(labels, w0=10.0, sigma=5.0, class_weights=None)
    np.testing.assert_array_equal(w[labels > 0], 1.0)
    np.testing.assert_allclose(w[:, 4], 1 + 10 * np.exp(-4 / 50), rtol=1e-6)


@pytest.mark.parametrize("n_cells", [0, 1])
def test_fewer_than_two_cells_has_no_border_term(n_cells, path):
    labels = np.zeros((20, 20), dtype=np.int32)
    if n_cells:
        labels[5:10, 5:10] = 7
    np.testing.assert_array_equal(weight_map(labels, class_weights=None), 1.0)


def test_sparse_ids_and_dtypes_give_the_same_map():
    labels = touching_cells((48, 48), 9, radius=8, seed=4)
    expected = weight_map(labels)
    sparse = np.where(labels > 0, labels.astype(np.int64) * 2**40 + 3, 0)
    np.testing.assert_array_equal(weight_map(sparse), expected)
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64, np.int16):
        np.testing.assert_array_equal(weight_map(labels.astype(dtype)), expected)


def test_input_not_modified():
    labels = touching_cells((40, 40), 6, radius=8, seed=5)
    mask = np.ones(labels.shape, dtype=bool)
    mask[:10] = False
    before = labels.copy(), mask.copy()
    weight_map(labels, mask=mask)
    np.testing.assert_array_equal(labels, before[0])
    np.testing.assert_array_equal(mask, before[1])


def test_balanced_class_weights():
    labels = np.zeros((10, 10), dtype=np.int32)
    labels[:2, :5] = 1  # 10 cell pixels, 90 background: only one cell, so no border term
    w = weight_map(labels, class_weights="balanced")
    np.testing.assert_allclose(w[labels > 0], 100 / (2 * 10))
    np.testing.assert_allclose(w[labels == 0], 100 / (2 * 90))
    np.testing.assert_allclose(w.mean(), 1.0, rtol=1e-6)


def test_balanced_with_one_class_is_one():
    np.testing.assert_array_equal(weight_map(np.zeros((8, 8), dtype=int)), 1.0)


def test_dict_class_weights_add_to_border_term(path):
    labels = touching_cells((50, 50), 8, radius=7, seed=6)
    border = reference_border(labels, w0=10.0, sigma=5.0)
    w = weight_map(labels, class_weights={0: 0.5, 1: 3.0})
    expected = np.where(labels > 0, 3.0, 0.5) + border
    np.testing.assert_allclose(w, expected, rtol=0, atol=1e-4)


def test_mask_zeroes_unannotated_and_counts_only_annotated():
    labels = np.zeros((10, 10), dtype=np.int32)
    labels[:5, :4] = 1  # a single cell: no border term
    mask = np.zeros((10, 10), dtype=bool)
    mask[:, :5] = True  # annotated: 20 cell pixels, 30 background
    w = weight_map(labels, mask=mask)
    np.testing.assert_array_equal(w[~mask], 0.0)
    np.testing.assert_allclose(w[mask & (labels > 0)], 50 / (2 * 20))
    np.testing.assert_allclose(w[mask & (labels == 0)], 50 / (2 * 30))


def test_zero_w0_gives_class_weights_only(path):
    labels = touching_cells((30, 30), 5, radius=6, seed=7)
    np.testing.assert_array_equal(weight_map(labels, w0=0.0, class_weights=None), 1.0)


def test_border_cutoff_bounds_the_term():
    cutoff = border_cutoff(10.0, 5.0, tolerance=1e-6)
    np.testing.assert_allclose(10.0 * np.exp(-(cutoff**2) / 50.0), 1e-6)
    assert border_cutoff(1e-7, 5.0) == 0.0


@pytest.mark.parametrize(
    ("labels", "kwargs", "match"),
    [
        (np.zeros((4, 4), dtype=float), {}, "integer dtype"),
        (np.zeros((4, 4), dtype=bool), {}, "integer dtype"),
        (-np.ones((4, 4), dtype=int), {}, "negative"),
        (np.zeros(4, dtype=int), {}, "2D"),
        (np.zeros((2, 2, 2, 2), dtype=int), {}, "2D"),
        (np.zeros((4, 4), dtype=int), {"mask": np.ones((4, 5), bool)}, r"`mask` \(shape"),
        (np.zeros((4, 4), dtype=int), {"spacing": (1.0, 1.0, 1.0)}, "`spacing`"),
        (np.zeros((4, 4), dtype=int), {"spacing": (1.0, 0.0)}, "`spacing`"),
        (np.zeros((4, 4), dtype=int), {"sigma": 0.0}, "`sigma`"),
        (np.zeros((4, 4), dtype=int), {"w0": -1.0}, "`w0`"),
        (np.zeros((4, 4), dtype=int), {"class_weights": "inverse"}, "`class_weights`"),
        (np.zeros((4, 4), dtype=int), {"class_weights": {0: 1.0}}, "`class_weights`"),
        (np.zeros((4, 4), dtype=int), {"class_weights": {0: 1.0, 1: -2}}, "`class_weights`"),
    ],
)
def test_weight_map_bad_input(labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        weight_map(labels, **kwargs)


def test_separation_borders_gaps_and_touching_edges():
    labels = np.zeros((6, 14), dtype=np.int32)
    labels[:, 0:3] = 1
    labels[:, 3:6] = 2  # touches cell 1
    labels[:, 7:9] = 3  # 1-pixel gap (column 6) to cell 2
    labels[:, 11:14] = 4  # 2-pixel gap (columns 9, 10) to cell 3
    borders = separation_borders(labels)
    expected_columns = {2, 3, 6}
    for column in range(14):
        assert borders[:, column].all() == (column in expected_columns), column
        assert borders[:, column].any() == (column in expected_columns), column
    only_background = separation_borders(labels, include_cells=False)
    np.testing.assert_array_equal(np.flatnonzero(only_background.any(axis=0)), [6])
    wide = separation_borders(labels, radius=2, include_cells=False)
    np.testing.assert_array_equal(np.flatnonzero(wide.any(axis=0)), [6, 9, 10])


def test_separation_borders_3d_and_single_cell():
    labels = np.zeros((5, 6, 6), dtype=np.uint16)
    labels[:2] = 1
    labels[3:] = 2
    borders = separation_borders(labels, include_cells=False)
    np.testing.assert_array_equal(
        borders, np.broadcast_to(np.arange(5)[:, None, None] == 2, (5, 6, 6))
    )
    assert not separation_borders(np.ones((5, 5), dtype=int)).any()


def test_instances_to_classes_separates_touching_cells():
    labels = touching_cells((64, 64), 12, radius=12, seed=8)
    classes = instances_to_classes(labels)
    assert classes.dtype == np.uint8
    assert set(np.unique(classes)) == {0, 1, 2}
    np.testing.assert_array_equal(classes == 2, separation_borders(labels))
    np.testing.assert_array_equal(classes[labels == 0] == 1, False)
    # every cell keeps an interior, and the cell class splits back into the instances
    _, n_components = ndi.label(classes == 1)
    assert n_components == len(np.unique(labels)) - 1
    two_class = instances_to_classes(labels, border_class=False)
    np.testing.assert_array_equal(two_class, np.where(classes == 2, 0, classes))


@pytest.mark.parametrize("radius", [0, 1.5])
def test_bad_radius(radius):
    with pytest.raises(ValueError, match="`radius`"):
        separation_borders(np.zeros((4, 4), dtype=int), radius=radius)


def test_borders_bad_labels():
    with pytest.raises(ValueError, match="integer dtype"):
        instances_to_classes(np.zeros((4, 4)))
