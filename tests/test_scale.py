"""Object size: measuring diameters, rescaling aligned, estimating with a model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.scale import (
    choose_zoom,
    estimate_diameter,
    line_diameter,
    object_confidence,
    object_diameter,
    predict_at_diameter,
    predict_rescaled,
    rescale_image,
    restore_labels,
    restore_probabilities,
    scale_factor,
)


def discs(shape=(96, 96), radius=6.0, spacing=24, offset=(11.3, 12.7)) -> np.ndarray:
    """A grid of discs at sub-pixel centres, labelled 1..N."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, dtype=np.int32)
    k = 0
    for cy in np.arange(offset[0], shape[0] - radius, spacing):
        for cx in np.arange(offset[1], shape[1] - radius, spacing):
            k += 1
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    return labels


def centroids(labels: np.ndarray) -> np.ndarray:
    ids = np.arange(1, labels.max() + 1)
    return np.array(ndi.center_of_mass(labels > 0, labels, ids))


def test_object_diameter_of_discs_and_squares():
    assert object_diameter(discs(radius=6.0)) == pytest.approx(12.0, rel=0.05)
    assert object_diameter(discs(radius=10.0, spacing=30)) == pytest.approx(20.0, rel=0.05)
    square = np.zeros((30, 30), dtype=np.uint16)
    square[2:12, 2:12] = 7
    assert object_diameter(square) == pytest.approx(math.sqrt(400 / math.pi))
    assert math.isnan(object_diameter(np.zeros((8, 8), dtype=int)))
    with pytest.raises(ValueError, match="integer"):
        object_diameter(np.zeros((8, 8)))


def test_line_diameter_across_discs_agrees_with_their_area():
    labels = discs(radius=10.0, spacing=30)
    centres = centroids(labels)
    # A line through each centre from edge to edge, at varied angles, as a user draws it.
    lines = []
    for k, (cy, cx) in enumerate(centres):
        angle = 0.4 * k
        step = np.array([np.sin(angle), np.cos(angle)])
        lines.append(np.array([[cy, cx] - 10.0 * step, [cy, cx] + 10.0 * step]))
    assert line_diameter(lines) == pytest.approx(object_diameter(labels), rel=0.05)
    # A polyline is as long as its segments; the median ignores one stray line.
    bent = np.array([[0.0, 0.0], [0.0, 12.0], [8.0, 12.0]])
    assert line_diameter([bent]) == 20.0
    assert line_diameter([bent, bent, np.array([[0.0, 0.0], [0.0, 200.0]])]) == 20.0
    with pytest.raises(ValueError, match="draw a line"):
        line_diameter([np.array([[3.0, 3.0], [3.0, 3.0]])])
    with pytest.raises(ValueError, match=r"\(V, 2\)"):
        line_diameter([np.zeros((2, 3))])


def test_scale_factor():
    assert scale_factor(40.0, 20.0) == 0.5
    assert scale_factor(None, 20.0) == 1.0
    assert scale_factor(20.0, None) == 1.0
    assert scale_factor(20.5, 20.0) == 1.0  # within 5 %: no resampling
    # Within the sizes the model was trained on: predicted as it is.
    assert scale_factor(40.0, 20.0, size_range=(10.0, 48.0)) == 1.0
    assert scale_factor(80.0, 20.0, size_range=(10.0, 48.0)) == 0.25
    with pytest.raises(ValueError, match="diameter"):
        scale_factor(-3.0, 20.0)


@pytest.mark.parametrize("factor", [0.5, 2.0, 0.37])
def test_rescale_keeps_objects_aligned(factor):
    labels = discs(radius=8.0, spacing=30)
    image = (labels > 0).astype(np.float32)
    small = rescale_image(image, factor)
    assert small.shape == tuple(round(s * factor) for s in image.shape)
    # Object centres move with the zoom about the pixel-centre convention.
    zoomed = ndi.label(small > 0.5)[0]
    actual = np.array(small.shape) / np.array(image.shape)  # the size is rounded
    expected = (centroids(labels) + 0.5) * actual - 0.5
    found = centroids(zoomed)
    assert len(found) == len(expected)
    assert np.abs(np.sort(found, axis=0) - np.sort(expected, axis=0)).max() < 0.3
    # ... and the way back lands on the original pixels.
    probs = np.stack([1.0 - small, small])
    back = restore_probabilities(probs, image.shape)
    assert back.shape == (2, *image.shape)
    np.testing.assert_allclose(back.sum(axis=0), 1.0, atol=1e-5)
    restored = ndi.label(back[1] > 0.5)[0]
    assert np.abs(centroids(restored) - centroids(labels)).max() < 0.5
    iou = ((restored > 0) & (labels > 0)).sum() / ((restored > 0) | (labels > 0)).sum()
    assert iou > (0.9 if factor > 0.4 else 0.8)


def test_restore_labels_keeps_ids():
    labels = discs(radius=5.0)
    up = rescale_image(labels, 2.0, order=0)
    assert up.dtype == labels.dtype and set(np.unique(up)) == set(np.unique(labels))
    back = restore_labels(up, labels.shape)
    assert (back == labels).mean() > 0.99


def test_predict_rescaled_identity_model_and_channels():
    labels = discs(radius=6.0)
    image = np.stack([(labels > 0).astype(np.float32)] * 2)  # (C, Y, X)
    shapes = []

    def predict(x):
        shapes.append(x.shape)
        return np.stack([1.0 - x[0], x[0]])

    probs = predict_rescaled(predict, image, 0.5)
    assert shapes == [(2, 48, 48)] and probs.shape == (2, 96, 96)
    assert ((probs[1] > 0.5) == (labels > 0)).mean() > 0.97


def _size_sensitive_model(model_diameter: float, fragment: float = 0.5):
    """A fake network that only sees objects of about its training size.

    Objects whose diameter (in the pixels it is given) is within 0.7x-1.4x
    ``model_diameter`` come out whole; larger ones in fragments (a grid of
    cuts every ``fragment * model_diameter`` pixels); smaller ones not at all.
    """

    def predict(image):
        fg = image > 0.5
        labels, n = ndi.label(fg)
        out = np.zeros(fg.shape, dtype=np.float32)
        for index in range(1, n + 1):
            obj = labels == index
            d = math.sqrt(4 * obj.sum() / math.pi)
            if 0.7 * model_diameter <= d <= 1.4 * model_diameter:
                out[obj] = 1
            elif d > 1.4 * model_diameter:
                step = max(2, int(model_diameter * fragment))
                cut = np.zeros_like(obj)
                cut[::step, :] = cut[:, ::step] = True
                out[obj & ~cut] = 1
        return np.stack([1 - out, out])

    def label(probs, factor):
        return ndi.label(probs[1] > 0.5)[0]

    return predict, label


@pytest.mark.parametrize("radius", [4.0, 12.0, 24.0])
def test_estimate_diameter_finds_the_objects_size(radius):
    spacing = int(4 * radius)
    labels = discs(shape=(max(96, 5 * spacing),) * 2, radius=radius, spacing=spacing)
    image = (labels > 0).astype(np.float32)
    predict, label = _size_sensitive_model(model_diameter=16.0)
    result = estimate_diameter(predict, label, image, 16.0)
    assert result["diameter"] == pytest.approx(2 * radius, rel=0.12)
    assert result["factor"] == pytest.approx(16.0 / result["diameter"])
    assert len(result["passes"]) >= 4


def test_estimate_diameter_is_not_fooled_by_fragments_of_the_model_size():
    # Nuclei five times the training size, cut by the network into pieces of
    # about its training size at their own zoom: the coarse zoom that sees
    # them whole is trusted, not the fine one that sees plausible fragments.
    labels = discs(shape=(400, 400), radius=40.0, spacing=100, offset=(43.3, 44.7))
    image = (labels > 0).astype(np.float32)
    predict, label = _size_sensitive_model(model_diameter=16.0, fragment=1.1)
    result = estimate_diameter(predict, label, image, 16.0, max_side=None)
    at_one = next(p for p in result["passes"] if p["factor"] == 1.0)
    assert at_one["diameter"] == pytest.approx(16.0, rel=0.1)  # fragments, closest to 16 px
    assert result["diameter"] == pytest.approx(80.0, rel=0.05)


def test_predict_at_diameter_follows_the_pipeline_rule():
    labels = discs(shape=(128, 128), radius=12.0, spacing=48)
    image = (labels > 0).astype(np.float32)
    predict, label = _size_sensitive_model(model_diameter=16.0)
    calls = []

    def counted(x):
        calls.append(x.shape)
        return predict(x)

    # Inside the model's trained range: predicted at the image's own size.
    _, _, info = predict_at_diameter(
        counted, label, image, model_diameter=16.0, diameter=24.0, size_range=(10.0, 30.0)
    )
    assert info["factor"] == 1.0 and calls == [(128, 128)]
    calls.clear()
    probs, found, info = predict_at_diameter(counted, label, image, model_diameter=16.0)
    assert info["estimated"] and info["diameter"] == pytest.approx(24.0, rel=0.12)
    assert len(calls) == len(set(calls)) == len(info["passes"])  # no zoom predicted twice
    assert probs.shape == (2, 128, 128) and found.max() >= 4


def test_estimate_diameter_without_objects():
    predict, label = _size_sensitive_model(16.0)
    result = estimate_diameter(predict, label, np.zeros((64, 64), np.float32), 16.0)
    assert math.isnan(result["diameter"]) and result["factor"] == 1.0


def test_object_confidence():
    labels = np.zeros((8, 8), np.int32)
    labels[:2, :2], labels[5:, 5:] = 1, 2
    probs = np.zeros((3, 8, 8), np.float32)
    probs[1, :2, :2] = 0.9
    probs[1, 5:, 5:] = 0.5  # a larger object counts once, as the small one does
    assert object_confidence(probs, labels) == pytest.approx(0.7)
    assert math.isnan(object_confidence(probs, np.zeros((8, 8), np.int32)))
    with pytest.raises(ValueError, match="class axis"):
        object_confidence(probs[1], labels)


def _pass(factor, objects, diameter, confidence):
    return {"factor": factor, "objects": objects, "diameter": diameter, "confidence": confidence}


def test_choose_zoom_shrinks_only_when_the_network_is_surer():
    def estimate(*passes, diameter=40.0):
        return {"diameter": diameter, "passes": list(passes)}

    one, half = _pass(1.0, 20, 38.0, 0.95), _pass(0.5, 20, 40.0, 0.97)
    quarter = _pass(0.25, 20, 42.0, 0.96)
    specks = _pass(0.3, 20, 20.0, 0.999)  # 6 px as the model saw them: not a plausible size
    # Within the trained range [10, 48]: shrunk because zoom 0.5 is the surest, surer than 1.
    assert choose_zoom(estimate(one, half, quarter, specks), 16.0, (10.0, 48.0)) == 0.5
    surer_at_one = _pass(1.0, 20, 38.0, 0.98)
    assert choose_zoom(estimate(surer_at_one, half), 16.0, (10.0, 48.0)) == 1.0
    # Beyond the range, too, objects the network is surest of at their own size stay so.
    assert choose_zoom(estimate(surer_at_one, half, diameter=60.0), 16.0, (10.0, 48.0)) == 1.0
    fragments = _pass(1.0, 80, 15.0, float("nan"))  # nothing whole found at zoom 1
    assert choose_zoom(estimate(fragments, half, diameter=60.0), 16.0, (10.0, 48.0)) == 0.5
    # Objects below the range are zoomed up to the training size (a tried zoom within 10 %).
    small = estimate(_pass(1.0, 20, 6.0, 0.9), _pass(2.6, 20, 6.1, 0.99), diameter=6.1)
    assert choose_zoom(small, 16.0, (10.0, 48.0)) == 2.6
    assert choose_zoom(estimate(one, diameter=float("nan")), 16.0) == 1.0
    # Passes without a confidence (made elsewhere): the trained range decides.
    old = estimate({"factor": 1.0, "objects": 20, "diameter": 38.0}, diameter=60.0)
    assert choose_zoom(old, 16.0, (10.0, 48.0)) == pytest.approx(16.0 / 60.0)


def test_estimate_and_zoom_follow_the_network_confidence():
    # A network that finds objects at any size but is surest at its own: the
    # 32 px discs are within the trained range, yet it is surer of them at 0.5.
    def predict(image):
        fg = image > 0.5
        labels, n = ndi.label(fg)
        cell = np.zeros(fg.shape, np.float32)
        for index in range(1, n + 1):
            obj = labels == index
            d = math.sqrt(4 * obj.sum() / math.pi)
            cell[obj] = 1.0 - 0.3 * min(1.0, abs(math.log2(d / 16.0)))
        return np.stack([1 - cell, cell])

    def label(probs, factor):
        return ndi.label(probs[1] > 0.5)[0]

    image = (discs(shape=(256, 256), radius=16.0, spacing=64) > 0).astype(np.float32)
    found = estimate_diameter(predict, label, image, 16.0, max_side=None)
    assert found["diameter"] == pytest.approx(32.0, rel=0.1)
    at = {p["factor"]: p["confidence"] for p in found["passes"]}
    assert at[0.5] > at[1.0]
    assert choose_zoom(found, 16.0, (10.0, 48.0)) == 0.5
    assert scale_factor(found["diameter"], 16.0, (10.0, 48.0)) == 1.0  # the range alone would not
