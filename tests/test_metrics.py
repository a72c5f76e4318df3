"""Tests for napari_unet.metrics against independent computations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import label as sk_label
from skimage.metrics import adapted_rand_error

from napari_unet import metrics
from napari_unet.io import read_image

# ---------------------------------------------------------------------------
# helpers: random label images and brute-force references
# ---------------------------------------------------------------------------


def random_rectangles(rng, shape=(24, 24), n=5, max_size=9) -> np.ndarray:
    """Label image of n (possibly overlapping, later ones on top) rectangles."""
    labels = np.zeros(shape, dtype=np.int32)
    for k in range(1, n + 1):
        h, w = rng.integers(2, max_size, size=2)
        y, x = rng.integers(0, shape[0] - h), rng.integers(0, shape[1] - w)
        labels[y : y + h, x : x + w] = k
    return labels


def perturb(rng, labels: np.ndarray) -> np.ndarray:
    """Shift by up to 2 px and add a spurious object: a plausible prediction."""
    shifted = np.roll(labels, tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
    shifted[:3, :3] = labels.max() + 7
    return shifted


def brute_iou(true, pred):
    """Dense IoU matrix with one full-image mask per pair (the slow way)."""
    ids_t = [i for i in np.unique(true) if i]
    ids_p = [j for j in np.unique(pred) if j]
    iou = np.zeros((len(ids_t), len(ids_p)))
    for a, i in enumerate(ids_t):
        for b, j in enumerate(ids_p):
            inter = np.sum((true == i) & (pred == j))
            union = np.sum((true == i) | (pred == j))
            iou[a, b] = inter / union
    return iou


def brute_max_matching(iou, threshold):
    """Largest number of one-to-one pairs with IoU > threshold, by enumeration."""
    n_t, n_p = iou.shape
    best = 0
    small, large = (n_t, n_p) if n_t <= n_p else (n_p, n_t)
    matrix = iou if n_t <= n_p else iou.T
    for perm in itertools.permutations(range(large), small):
        best = max(best, sum(matrix[i, perm[i]] > threshold for i in range(small)))
    return best


def brute_rand(true, pred):
    """Foreground-restricted Rand F-score by enumerating pixel pairs.

    Predicted 0 pixels are singletons (never 'same object').
    """
    t = true.ravel()
    p = pred.ravel()
    idx = np.flatnonzero(t)
    same_t = same_p = same_both = 0
    for a, b in itertools.combinations(idx, 2):
        st = t[a] == t[b]
        sp = p[a] == p[b] and p[a] != 0
        same_t += st
        same_p += sp
        same_both += st and sp
    split = same_both / same_t if same_t else 1.0
    merge = same_both / same_p if same_p else 1.0
    return split, merge


# ---------------------------------------------------------------------------
# confusion-matrix family
# ---------------------------------------------------------------------------


def test_confusion_matrix_hand_case():
    true = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    expected = [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert metrics.confusion_matrix(true, pred).tolist() == expected
    out = metrics.confusion_matrix(true, pred, num_classes=4)
    assert out.shape == (4, 4) and out.dtype == np.int64 and out.sum() == 6


def test_confusion_matrix_ignore_index():
    true = np.array([0, 1, 255, 255])
    pred = np.array([0, 0, 1, 1])
    out = metrics.confusion_matrix(true, pred, num_classes=2, ignore_index=255)
    assert out.tolist() == [[1, 0], [1, 0]]


def test_confusion_matrix_rejects_class_beyond_num_classes():
    with pytest.raises(ValueError, match="`num_classes` is 2"):
        metrics.confusion_matrix(np.array([0, 2]), np.array([0, 1]), num_classes=2)


def test_class_scores_match_fcn_definitions_computed_per_class():
    rng = np.random.default_rng(1)
    true = rng.integers(0, 4, size=(30, 40))
    pred = np.where(rng.random((30, 40)) < 0.7, true, rng.integers(0, 4, size=(30, 40)))
    scores = metrics.class_scores(true, pred)
    acc, iou, dice, freq = [], [], [], []
    for c in range(4):
        t, p = true == c, pred == c
        acc.append(np.sum(t & p) / np.sum(t))
        iou.append(np.sum(t & p) / np.sum(t | p))
        dice.append(2 * np.sum(t & p) / (np.sum(t) + np.sum(p)))
        freq.append(np.sum(t) / t.size)
    assert scores["pixel_accuracy"] == pytest.approx(np.mean(true == pred))
    assert scores["accuracy"] == pytest.approx(acc)
    assert scores["mean_accuracy"] == pytest.approx(np.mean(acc))
    assert scores["iou"] == pytest.approx(iou)
    assert scores["mean_iou"] == pytest.approx(np.mean(iou))
    assert scores["frequency_weighted_iou"] == pytest.approx(np.dot(freq, iou))
    assert scores["dice"] == pytest.approx(dice)
    assert scores["mean_dice"] == pytest.approx(np.mean(dice))


def test_class_scores_absent_class_is_nan_and_skipped():
    true = np.array([0, 0, 2, 2])
    scores = metrics.class_scores(true, true, num_classes=3)
    assert np.isnan(scores["iou"][1]) and np.isnan(scores["accuracy"][1])
    assert scores["mean_iou"] == 1.0 and scores["mean_accuracy"] == 1.0
    assert scores["frequency_weighted_iou"] == 1.0 and scores["pixel_accuracy"] == 1.0


def test_dice_score_equals_binary_class_dice_and_handles_empty():
    rng = np.random.default_rng(2)
    a, b = rng.random((20, 20)) < 0.4, rng.random((20, 20)) < 0.5
    assert metrics.dice_score(a, b) == pytest.approx(metrics.class_scores(a, b)["dice"][1])
    empty = np.zeros((4, 4), bool)
    assert metrics.dice_score(empty, empty) == 1.0
    assert metrics.dice_score(a, ~a) == 0.0


# ---------------------------------------------------------------------------
# ISBI 2012: pixel and Rand errors
# ---------------------------------------------------------------------------


def test_pixel_error_hand_case():
    true = np.array([[255, 255, 0, 0]], dtype=np.uint8)
    pred = np.array([[1, 0, 1, 0]])
    # tp = 1, fp = 1, fn = 1: 1 - 2 / 4
    assert metrics.pixel_error(true, pred) == pytest.approx(0.5)
    assert metrics.pixel_error(true, true) == 0.0
    assert metrics.pixel_error(true, 255 - true) == 1.0


def test_rand_hand_cases_split_and_merge():
    true = np.array([[1, 1, 1, 1]])
    split = metrics.rand_scores(true, np.array([[1, 1, 2, 2]]))
    # 6 true pairs, 2 kept together, no false merges
    assert split["v_rand_split"] == pytest.approx(2 / 6)
    assert split["v_rand_merge"] == 1.0
    assert split["rand_error"] == pytest.approx(1 - 2 * (1 / 3) / (1 + 1 / 3))
    merge = metrics.rand_scores(np.array([[1, 1, 2, 2]]), np.array([[5, 5, 5, 5]]))
    assert merge["v_rand_split"] == 1.0
    assert merge["v_rand_merge"] == pytest.approx(2 / 6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rand_matches_pair_enumeration(seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 4, size=(7, 7))
    pred = rng.integers(0, 4, size=(7, 7))  # zeros inside the true foreground: singletons
    split, merge = brute_rand(true, pred)
    scores = metrics.rand_scores(true, pred)
    assert scores["v_rand_split"] == pytest.approx(split, rel=1e-12)
    assert scores["v_rand_merge"] == pytest.approx(merge, rel=1e-12)
    assert scores["v_rand"] == pytest.approx(2 * split * merge / (split + merge), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_rand_equals_skimage_adapted_rand_without_predicted_zeros(seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 6, size=(40, 50))
    pred = rng.integers(1, 9, size=(40, 50))
    pred[true == 0] = 0  # zeros only where the truth is ignored anyway
    are, prec, rec = adapted_rand_error(true, pred)
    scores = metrics.rand_scores(true, pred)
    assert scores["rand_error"] == pytest.approx(are, rel=1e-12)
    # scikit-image's `prec` divides by the true pair count: our split score
    assert scores["v_rand_split"] == pytest.approx(prec, rel=1e-12)
    assert scores["v_rand_merge"] == pytest.approx(rec, rel=1e-12)


def test_rand_predicted_zeros_are_singletons_not_one_object():
    rng = np.random.default_rng(5)
    true = random_rectangles(rng, n=6)
    pred = perturb(rng, true)
    assert np.any((pred == 0) & (true != 0))
    ours = metrics.rand_error(true, pred)
    # skimage treats predicted 0 as one more object: different value ...
    assert ours != pytest.approx(adapted_rand_error(true, pred)[0], rel=1e-6)
    # ... and the same value once those pixels get unique ids (singletons).
    unique_ids = pred.astype(np.int64)
    holes = unique_ids == 0
    unique_ids[holes] = unique_ids.max() + 1 + np.arange(np.count_nonzero(holes))
    assert ours == pytest.approx(adapted_rand_error(true, unique_ids)[0], rel=1e-12)


def test_rand_ignores_prediction_on_true_background():
    rng = np.random.default_rng(6)
    true = random_rectangles(rng)
    pred = perturb(rng, true)
    other = pred.copy()
    other[true == 0] = rng.integers(0, 50, size=np.count_nonzero(true == 0))
    assert metrics.rand_scores(true, pred) == metrics.rand_scores(true, other)


def test_rand_error_is_zero_for_identical_and_invariant_to_ids():
    rng = np.random.default_rng(7)
    true = random_rectangles(rng)
    assert metrics.rand_error(true, true) == 0.0
    renamed = np.where(true > 0, true.astype(np.uint64) * 1_000_003 + 2**40, 0)
    assert metrics.rand_error(true, renamed) == pytest.approx(0.0, abs=1e-15)


# ---------------------------------------------------------------------------
# warping error
# ---------------------------------------------------------------------------


def _n_components(mask):
    # foreground 4-connected, background 8-connected with a background frame
    framed = np.pad(mask, 1)
    return sk_label(framed, connectivity=1).max(), sk_label(~framed, connectivity=2).max()


def test_simple_point_flips_preserve_topology():
    rng = np.random.default_rng(8)
    checked = 0
    for _ in range(6):
        mask = rng.random((9, 9)) < 0.5
        before = _n_components(mask)
        padded = np.pad(mask, 1)
        for y, x in itertools.product(range(9), range(9)):
            window = padded[y : y + 3, x : x + 3]
            code = sum(
                int(window[1 + dy, 1 + dx]) << k for k, (dy, dx) in enumerate(metrics._NEIGHBOURS)
            )
            if metrics._SIMPLE[code]:
                flipped = mask.copy()
                flipped[y, x] = ~flipped[y, x]
                assert _n_components(flipped) == before
                checked += 1
    assert checked > 50


@pytest.mark.parametrize(
    ("rows", "simple"),
    [
        (["...", ".x.", "..."], False),  # isolated pixel: flipping deletes an object
        (["xxx", "x.x", "xxx"], False),  # filling it removes a hole
        (["...", "xxx", "..."], False),  # middle of a line: removal splits
        (["...", "xx.", "..."], True),  # end of a line
        (["xxx", "xxx", "..."], True),  # on a straight edge
    ],
)
def test_simple_point_table_known_configurations(rows, simple):
    window = np.array([[c == "x" for c in row] for row in rows])
    code = sum(int(window[1 + dy, 1 + dx]) << k for k, (dy, dx) in enumerate(metrics._NEIGHBOURS))
    assert bool(metrics._SIMPLE[code]) is simple


def _two_squares():
    true = np.zeros((12, 12), dtype=bool)
    true[2:10, 2:6] = True
    true[2:10, 7:11] = True
    return true


def test_warping_error_ignores_boundary_shifts():
    true = np.zeros((20, 20), dtype=bool)
    true[5:14, 6:15] = True
    pred = ndi.binary_dilation(true)
    assert metrics.pixel_error(true, pred) > 0
    assert metrics.warping_error(true, pred) == 0.0
    assert metrics.warping_error(true, true) == 0.0


def test_warping_error_counts_a_merge():
    true = _two_squares()
    pred = true.copy()
    pred[2:10, 6] = True  # the separating membrane is gone: two cells merged
    # no line pixel is simple (each would join the two cells): all 8 remain
    assert metrics.warping_error(true, pred) == pytest.approx(8 / 144)


def test_warping_error_spurious_object_hole_and_deletion():
    true = _two_squares()
    speck = true.copy()
    speck[0, 0] = True  # a new 1-pixel object cannot be warped into existence
    assert metrics.warping_error(true, speck) == pytest.approx(1 / 144)
    hole = true.copy()
    hole[5, 3] = False  # a hole inside a cell
    assert metrics.warping_error(true, hole) == pytest.approx(1 / 144)
    gone = true.copy()
    gone[2:10, 2:6] = False  # a deleted cell: all pixels but one can be warped away
    assert metrics.warping_error(true, gone) == pytest.approx(1 / 144)


def test_warping_error_stack_is_planewise():
    true = _two_squares()
    pred = true.copy()
    pred[2:10, 6] = True
    stack_t = np.stack([true, true])
    stack_p = np.stack([pred, true])
    assert metrics.warping_error(stack_t, stack_p) == pytest.approx(8 / (2 * 144))


# ---------------------------------------------------------------------------
# ISBI errors over thresholds
# ---------------------------------------------------------------------------


def test_isbi_errors_perfect_map_and_membrane_polarity():
    true = np.where(_two_squares(), 255, 0).astype(np.uint8)
    cell = true / 255.0
    out = metrics.isbi_errors(cell, true, warping=True)
    assert out["pixel_error"] == 0.0 and out["rand_error"] == 0.0 and out["warping_error"] == 0
    membrane = metrics.isbi_errors(1.0 - cell, true, probability_of="membrane")
    assert membrane["rand_errors"] == out["rand_errors"]


def test_isbi_errors_are_minima_of_per_threshold_errors():
    rng = np.random.default_rng(9)
    true = np.where(_two_squares(), 255, 0).astype(np.uint8)
    prob = np.clip(ndi.gaussian_filter(true / 255.0, 1.0) + rng.normal(0, 0.2, true.shape), 0, 1)
    thresholds = [0.3, 0.5, 0.7]
    out = metrics.isbi_errors(prob, true, thresholds=thresholds)
    t_labels = metrics.mask_to_instances(true)
    for t, pix, rand in zip(thresholds, out["pixel_errors"], out["rand_errors"], strict=True):
        p = prob > t
        assert pix == pytest.approx(metrics.pixel_error(true, p))
        assert rand == pytest.approx(metrics.rand_error(t_labels, metrics.mask_to_instances(p)))
    best = int(np.argmin(out["rand_errors"]))
    assert out["rand_error"] == min(out["rand_errors"])
    assert out["rand_threshold"] == thresholds[best]
    # a stack of two copies has the same ratios (pair counts summed per plane)
    stack = metrics.isbi_errors(np.stack([prob, prob]), np.stack([true, true]), thresholds=[0.5])
    assert stack["rand_error"] == pytest.approx(out["rand_errors"][1])
    assert stack["pixel_error"] == pytest.approx(out["pixel_errors"][1])


def test_isbi_errors_validation():
    true = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="`probability` must be a float"):
        metrics.isbi_errors(true, true)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        metrics.isbi_errors(np.full((8, 8), 1.5), true)
    with pytest.raises(ValueError, match="same shape"):
        metrics.isbi_errors(np.zeros((8, 9)), true)
    with pytest.raises(ValueError, match="probability_of"):
        metrics.isbi_errors(np.zeros((8, 8)), true, probability_of="nucleus")


def test_isbi_errors_on_real_slice(isbi2012):
    true = read_image(isbi2012 / "labels" / "slice_00.png")
    rng = np.random.default_rng(10)
    prob = ndi.gaussian_filter((true > 0).astype(float), 1.5)
    prob = np.clip(prob + rng.normal(0, 0.1, prob.shape), 0, 1)
    out = metrics.isbi_errors(prob, true, thresholds=[0.3, 0.5, 0.7], warping=True)
    # A blurred truth is close at its best threshold and bad at a wrong one.
    assert out["rand_threshold"] == 0.5 and out["rand_error"] < 0.1
    assert max(out["rand_errors"]) > 2 * out["rand_error"]
    assert 0 < out["pixel_error"] < 0.1 and 0 < out["warping_error"] < 0.01


# ---------------------------------------------------------------------------
# instance matching, average precision, SEG
# ---------------------------------------------------------------------------


def test_match_instances_hand_case():
    true = np.array([[1, 1, 0, 2, 2]])
    pred = np.array([[3, 3, 0, 0, 4]])
    out = metrics.match_instances(true, pred)
    assert (out["tp"], out["fp"], out["fn"]) == (1, 1, 1)
    assert out["true_ids"].tolist() == [1] and out["pred_ids"].tolist() == [3]
    assert out["precision"] == 0.5 and out["recall"] == 0.5 and out["f1"] == 0.5
    assert out["ap"] == pytest.approx(1 / 3) and out["mean_matched_iou"] == 1.0
    # object 2 vs 4 has IoU exactly 0.5: not a match (strictly greater is required)
    assert metrics.match_instances(true, pred, threshold=0.49)["tp"] == 2


@pytest.mark.parametrize("seed", range(4))
def test_average_precision_counts_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    true = random_rectangles(rng, n=6)
    pred = perturb(rng, true)
    iou = brute_iou(true, pred)
    out = metrics.average_precision(true, pred)
    n_t, n_p = iou.shape
    for t, tp, fp, fn, ap in zip(
        out["thresholds"], out["tp"], out["fp"], out["fn"], out["ap"], strict=True
    ):
        expected = int(np.sum(iou > t))  # unique matching for t >= 0.5
        assert (tp, fp, fn) == (expected, n_p - expected, n_t - expected)
        assert ap == pytest.approx(expected / (n_t + n_p - expected))
    assert out["mean_ap"] == pytest.approx(np.mean(out["ap"]))


@pytest.mark.parametrize("seed", range(5))
def test_low_threshold_matching_is_maximal(seed):
    rng = np.random.default_rng(100 + seed)
    true = random_rectangles(rng, shape=(16, 16), n=5, max_size=8)
    pred = random_rectangles(rng, shape=(16, 16), n=5, max_size=8)
    iou = brute_iou(true, pred)
    out = metrics.match_instances(true, pred, threshold=0.1)
    assert out["tp"] == brute_max_matching(iou, 0.1)
    assert np.all(out["iou"] > 0.1)
    assert len(set(out["true_ids"].tolist())) == out["tp"] == len(set(out["pred_ids"].tolist()))


def test_hungarian_beats_greedy_on_a_crafted_case():
    # A greedy matcher takes (A, P) first (highest IoU) and then nothing is left
    # for B; the maximal matching is (A, Q), (B, P).
    true = np.zeros((1, 40), np.int32)
    true[0, 0:10], true[0, 10:20] = 1, 2  # A, B
    pred = np.zeros((1, 40), np.int32)
    pred[0, 4:14] = 3  # P: IoU(A)=6/14, IoU(B)=4/16
    pred[0, 0:3] = 4  # Q: IoU(A)=3/10
    out = metrics.match_instances(true, pred, threshold=0.2)
    assert out["tp"] == 2
    pairs = zip(out["true_ids"].tolist(), out["pred_ids"].tolist(), strict=True)
    assert sorted(pairs) == [(1, 4), (2, 3)]


def test_seg_score_hand_cases():
    assert metrics.seg_score(np.array([[1, 1, 1, 1, 0]]), np.array([[5, 5, 5, 0, 0]])) == 0.75
    # exactly half of the reference covered: no match (more than 50% required)
    assert metrics.seg_score(np.array([[1, 1, 1, 1]]), np.array([[2, 2, 0, 0]])) == 0.0
    # extra predicted objects cost nothing; missing reference objects count 0
    assert metrics.seg_score(np.array([[1, 1, 0, 0]]), np.array([[1, 1, 2, 2]])) == 1.0
    assert metrics.seg_score(np.array([[1, 1, 2, 2]]), np.array([[1, 1, 0, 0]])) == 0.5
    assert np.isnan(metrics.seg_score(np.zeros((2, 2), int), np.ones((2, 2), int)))


@pytest.mark.parametrize("seed", range(3))
def test_seg_score_matches_brute_force(seed):
    rng = np.random.default_rng(200 + seed)
    true = random_rectangles(rng, n=6)
    pred = perturb(rng, true)
    scores = []
    for i in [i for i in np.unique(true) if i]:
        r = true == i
        best = 0.0
        for j in [j for j in np.unique(pred) if j]:
            s = pred == j
            if np.sum(r & s) > 0.5 * np.sum(r):
                best = np.sum(r & s) / np.sum(r | s)
        scores.append(best)
    assert metrics.seg_score(true, pred) == pytest.approx(np.mean(scores))


def test_identical_inputs_give_perfect_scores_and_ap_is_symmetric():
    rng = np.random.default_rng(11)
    true = random_rectangles(rng, n=6)
    pred = perturb(rng, true)
    ap = metrics.average_precision(true, true)
    assert ap["mean_ap"] == 1.0 and all(a == 1.0 for a in ap["ap"])
    assert metrics.seg_score(true, true) == 1.0
    forward = metrics.average_precision(true, pred)
    backward = metrics.average_precision(pred, true)
    assert forward["ap"] == backward["ap"] and forward["fp"] == backward["fn"]
    empty = np.zeros_like(true)
    assert metrics.average_precision(empty, empty)["mean_ap"] == 1.0
    assert metrics.match_instances(empty, true)["precision"] == 0.0


def test_instance_metrics_are_invariant_to_label_values():
    rng = np.random.default_rng(12)
    true = random_rectangles(rng, n=6)
    pred = perturb(rng, true)
    big = np.where(pred > 0, pred.astype(np.uint64) * 7_919 + 3_000_000_000, 0)
    assert (
        metrics.average_precision(true, big)["ap"] == metrics.average_precision(true, pred)["ap"]
    )
    assert metrics.seg_score(true, big) == metrics.seg_score(true, pred)


def test_instance_metrics_with_hundreds_of_objects():
    # 400 nuclei on 512 x 512 (DSB 2018 images have up to 375); the time it takes is
    # measured in benchmarks/bench_metrics.py, not bounded here.
    rng = np.random.default_rng(13)
    disk = np.add.outer(np.arange(-9, 10) ** 2, np.arange(-9, 10) ** 2) < 100
    true = np.zeros((512, 512), np.int32)
    grid = [(cy, cx) for cy in range(12, 500, 25) for cx in range(12, 500, 25)][:400]
    for k, (cy, cx) in enumerate(grid, start=1):
        cy, cx = cy + rng.integers(-2, 3), cx + rng.integers(-2, 3)
        window = true[cy - 9 : cy + 10, cx - 9 : cx + 10]
        window[disk] = k
    pred = np.roll(true, 1, axis=0)
    ap = metrics.average_precision(true, pred)
    seg = metrics.seg_score(true, pred)
    assert ap["tp"][0] == 400 and seg > 0.8


def test_instance_metrics_on_dsb_labels(dsb2018):
    paths = sorted((dsb2018 / "labels").glob("*.tif"))[:3]
    for path in paths:
        true = read_image(path)
        assert metrics.average_precision(true, true)["mean_ap"] == 1.0
        eroded = np.where(ndi.binary_erosion(true > 0), true, 0)
        # Each eroded nucleus lies inside its own: IoU = eroded area / area.
        area = np.bincount(true.ravel())
        kept = np.bincount(eroded.ravel(), minlength=len(area))
        ids = np.flatnonzero((area > 0) & (kept > 0.5 * area))
        ids = ids[ids > 0]
        out = metrics.match_instances(true, eroded)
        assert out["true_ids"].tolist() == out["pred_ids"].tolist() == ids.tolist()
        assert out["n_true"] == np.count_nonzero(area[1:])


# ---------------------------------------------------------------------------
# validation, inputs untouched
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "func",
    [
        metrics.rand_error,
        metrics.seg_score,
        metrics.match_instances,
        metrics.average_precision,
        metrics.confusion_matrix,
    ],
)
def test_label_metrics_validate_inputs(func):
    a = np.zeros((4, 5), np.int32)
    with pytest.raises(ValueError, match=r"`pred` \(shape \(4, 4\)\).*\(shape \(4, 5\)\)"):
        func(a, np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="integer label image"):
        func(a, a.astype(float))
    with pytest.raises(ValueError, match="negative"):
        func(a, a - 1)


def test_threshold_validation():
    a = np.zeros((3, 3), np.int32)
    with pytest.raises(ValueError, match="`threshold`"):
        metrics.match_instances(a, a, threshold=1.0)
    with pytest.raises(ValueError, match="`threshold`"):
        metrics.average_precision(a, a, thresholds=[0.5, -0.1])


def test_inputs_are_not_modified():
    rng = np.random.default_rng(14)
    true = random_rectangles(rng)
    pred = perturb(rng, true)
    copies = true.copy(), pred.copy()
    metrics.rand_scores(true, pred)
    metrics.average_precision(true, pred)
    metrics.seg_score(true, pred)
    metrics.warping_error(true, pred)
    metrics.class_scores(true, pred)
    assert np.array_equal(true, copies[0]) and np.array_equal(pred, copies[1])


def test_interior_mask_separates_touching_objects():
    labels = np.array([[1, 1, 2, 2, 0, 3]])
    assert metrics.interior_mask(labels).tolist() == [[True, False, False, True, False, True]]
    assert metrics.mask_to_instances(metrics.interior_mask(labels)).max() == 3
