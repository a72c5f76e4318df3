"""The pipeline's diameter step and the post-processing stored in the model."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.models import UNet
from napari_unet.segment import SegmentConfig, segment


def _discs(radius: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    k = 0
    for cy in range(radius + 3, size - radius - 2, 2 * radius + 6):
        for cx in range(radius + 3, size - radius - 2, 2 * radius + 6):
            k += 1
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    return labels


def _model(classes: int = 3):
    net = UNet(1, classes, depth=1, base_channels=2, padding="same").eval()
    seen: list[tuple[int, ...]] = []
    net.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    meta = {
        "num_classes": classes,
        "object_diameter": 16.0,
        "normalization": {"method": "percentile", "scope": "none"},
        "postprocessing": {"method": "components", "threshold": 0.3, "min_size": 8},
    }
    return net, meta, seen


def test_a_given_diameter_rescales_and_returns_the_original_size():
    net, meta, seen = _model()
    image = (_discs(16, 96) > 0).astype(np.float32)
    config = SegmentConfig.from_metadata(meta, device="cpu", backend="eager", diameter=32.0)
    assert config.threshold == 0.3 and config.postprocess["method"] == "components"
    result = segment((net, meta), image, config=config)
    half = set(seen)
    seen.clear()
    segment((net, meta), image, config=SegmentConfig.from_metadata(meta, diameter=None))
    # Tiles carry a mirrored margin, so compare with the unscaled run's tiles.
    assert max(map(max, half)) < max(map(max, seen))
    assert result.labels.shape == image.shape
    assert result.probabilities.shape == (3, 96, 96)
    size_info = {k: result.info[k] for k in ("diameter", "factor", "estimated")}
    assert size_info == {"diameter": 32.0, "factor": 0.5, "estimated": False}
    # The user's settings replace the stored ones.
    mine = SegmentConfig.from_metadata(meta, threshold=0.6, postprocess={"min_size": 2})
    assert mine.threshold == 0.6 and mine.postprocess == {"min_size": 2}


def test_auto_estimates_and_says_what_it_used():
    net, meta, seen = _model()
    image = (_discs(8, 64) > 0).astype(np.float32)
    config = SegmentConfig.from_metadata(meta, device="cpu", backend="eager")
    result = segment((net, meta), image, config=config)  # "default": auto for 3 classes
    assert result.info["estimated"] is True
    assert len({shape for shape in seen}) >= 3  # several zooms tried
    assert result.labels.shape == image.shape


def test_auto_reuses_the_estimate_pass_at_the_chosen_zoom():
    net, meta, seen = _model()
    image = (_discs(8, 64) > 0).astype(np.float32)
    auto = segment((net, meta), image, config=SegmentConfig.from_metadata(meta, device="cpu"))
    # Each zoom of this small image is one tile: none was predicted twice.
    assert len(seen) == len(set(seen))
    factor = auto.info["factor"]
    given = SegmentConfig.from_metadata(meta, device="cpu", diameter=16.0 / factor)
    again = segment((net, meta), image, config=given)
    assert again.info["factor"] == pytest.approx(factor)
    np.testing.assert_allclose(auto.probabilities, again.probabilities, atol=1e-6)
    np.testing.assert_array_equal(auto.labels, again.labels)


def test_no_rescaling_for_none_two_class_models_and_old_files():
    image = (_discs(8, 64) > 0).astype(np.float32)
    net, meta, seen = _model(3)
    segment((net, meta), image, config=SegmentConfig(diameter=None, device="cpu"))
    unscaled = set(seen)
    for classes, meta_change, diameter in ((3, {}, None), (2, {}, "default"), (3, None, 20.0)):
        net, meta, seen = _model(classes)
        if meta_change is None:
            del meta["object_diameter"]  # a model file from before object sizes
        config = SegmentConfig.from_metadata(meta, device="cpu", diameter=diameter)
        result = segment((net, meta), image, config=config)
        assert set(seen) == unscaled and result.info["factor"] == 1.0
    # Objects within the sizes the model was trained on and not above its size: as they are.
    net, meta, seen = _model(3)
    meta["object_diameter_range"] = [12.0, 40.0]
    config = SegmentConfig.from_metadata(meta, device="cpu", diameter=14.0)
    result = segment((net, meta), image, config=config)
    assert set(seen) == unscaled and result.info["factor"] == 1.0
    with pytest.raises(ValueError, match="diameter"):
        SegmentConfig(diameter="large")
    with pytest.raises(ValueError, match="diameter"):
        SegmentConfig(diameter=-4.0)


@pytest.mark.parametrize("surer", [0.5, 1.0])
def test_a_typed_size_within_the_trained_range_shrinks_only_if_the_network_is_surer(
    monkeypatch, surer
):
    import napari_unet.segment._memory as memory
    from napari_unet.scale import zoom_passes

    net, meta, seen = _model(3)
    meta["object_diameter_range"] = [12.0, 40.0]
    image = (_discs(16, 96) > 0).astype(np.float32)
    checked = []

    def passes(predict, label, plane, factors, **kwargs):
        found = zoom_passes(predict, label, plane, factors, **kwargs)
        checked.append(tuple(p["factor"] for p in found["passes"]))
        # The network's confidence decides; here it is made surer at ``surer``.
        for p in found["passes"]:
            p.update(objects=4, diameter=32.0, confidence=0.9 if p["factor"] == surer else 0.6)
        return found

    monkeypatch.setattr(memory, "zoom_passes", passes)
    config = SegmentConfig.from_metadata(meta, device="cpu", backend="eager", diameter=32.0)
    result = segment((net, meta), image, config=config)
    # Both zooms were predicted (once each: the chosen pass's probabilities are reused).
    assert checked == [(0.5, 1.0)] and len(seen) == len(set(seen)) == 2
    size_info = {k: result.info[k] for k in ("diameter", "factor", "estimated")}
    assert size_info == {"diameter": 32.0, "factor": surer, "estimated": False}
    assert result.labels.shape == image.shape
