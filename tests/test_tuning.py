"""Post-processing chosen on validation data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.postprocess import probabilities_to_labels
from napari_unet.tuning import choose_postprocessing, postprocessing_options, score_labels


def _touching_pair(neck: float):
    """Two 10x10 squares joined by a 2-pixel bridge of cell probability ``neck``."""
    truth = np.zeros((32, 40), dtype=np.int32)
    truth[10:20, 5:15] = 1
    truth[10:20, 17:27] = 2
    cell = np.where(truth > 0, 0.95, 0.02)
    cell[14:16, 15:17] = neck
    probs = np.stack([1.0 - cell, cell]).astype(np.float32)
    return probs, truth


def test_components_threshold_above_the_bridge():
    # At 0.5 the bridge (0.62) joins the squares; any threshold above it separates them.
    probs, truth = _touching_pair(neck=0.62)
    chosen = choose_postprocessing([probs] * 2, [truth] * 2, metric="ap50", methods=["components"])
    assert chosen["method"] == "components"
    assert chosen["threshold"] > 0.62
    assert chosen["score"] == 1.0
    assert chosen["images"] == 2 and chosen["tried"] > 10


def test_membranes_prefer_components_over_distance_watershed():
    # A dumbbell-shaped cell: the default distance watershed cuts it at its
    # neck, which the Rand error punishes; connected components keep it whole.
    truth = np.zeros((40, 60), dtype=np.int32)
    truth[5:35, 2:16] = 1  # a plain cell, 3 pixels of membrane away from the dumbbell
    truth[8:30, 19:35] = 2
    truth[8:30, 41:57] = 2
    truth[17:21, 35:41] = 2  # the neck
    cell = ndi.gaussian_filter((truth > 0).astype(float), 0.7)
    probs = np.stack([1.0 - cell, cell]).astype(np.float32)
    chosen = choose_postprocessing([probs], [truth], metric="rand", thresholds=(0.3, 0.5, 0.7))
    assert chosen["method"] == "components"
    assert chosen["score"] < 0.01
    assert chosen["default_score"] > 0.1


def test_three_class_watershed_separates_touching_nuclei():
    # Two touching discs whose interior probability runs across the contact
    # (as a blurry model's does): no threshold separates them as components;
    # seeds at confident centres do.
    truth = np.zeros((30, 44), dtype=np.int32)
    yy, xx = np.mgrid[:30, :44]
    truth[(yy - 15) ** 2 + (xx - 12) ** 2 <= 64] = 1
    truth[((yy - 15) ** 2 + (xx - 27) ** 2 <= 64) & (truth == 0)] = 2
    cell = np.clip(0.55 + 0.1 * ndi.distance_transform_edt(truth > 0), 0, 0.99) * (truth > 0)
    probs = np.stack([1 - cell, cell, np.zeros_like(cell)]).astype(np.float32)
    chosen = choose_postprocessing([probs], [truth], metric="dsb", thresholds=(0.3, 0.5, 0.7))
    assert chosen["method"] == "watershed"
    assert chosen["seed_threshold"] > 0.9
    assert chosen["score"] > 0.9 and chosen["default_score"] < 0.5


def test_choose_postprocessing_errors():
    probs, truth = _touching_pair(0.6)
    with pytest.raises(ValueError, match="metric"):
        choose_postprocessing([probs], [truth], metric="f1")
    with pytest.raises(ValueError, match="as many"):
        choose_postprocessing([probs], [])


def test_postprocessing_options_scale_and_override():
    meta = {
        "postprocessing": {
            "method": "watershed",
            "threshold": 0.6,
            "seed_threshold": 0.8,
            "min_size": 32,
            "min_seed_size": 8,
            "metric": "dsb",
            "score": 0.6,
        }
    }
    options = postprocessing_options(meta)
    assert options == {
        "method": "watershed",
        "threshold": 0.6,
        "seed_threshold": 0.8,
        "min_size": 32,
        "min_seed_size": 8,
    }
    # Predicted at half size: areas in the image's pixels are 4 times larger.
    assert postprocessing_options(meta, factor=0.5)["min_size"] == 128
    assert postprocessing_options(meta, factor=2.0)["min_seed_size"] == 2
    # A seed erosion is a radius: it scales with the zoom itself.
    eroded = {"postprocessing": {"method": "seeded", "seed_erosion": 3}}
    assert postprocessing_options(eroded, factor=0.5)["seed_erosion"] == 6
    assert postprocessing_options(eroded, factor=4.0)["seed_erosion"] == 1
    assert postprocessing_options(meta, overrides={"threshold": 0.4, "method": None}) == {
        **options,
        "threshold": 0.4,
    }
    # Older bundled files: only the card's threshold.
    legacy = {"pretrained": {"postprocessing": {"threshold": 0.8}}}
    assert postprocessing_options(legacy) == {"threshold": 0.8}
    assert postprocessing_options({}) == {}


def test_leaky_membrane_chooses_seeded_growth():
    # Two cells behind a membrane the network is unsure of in one place
    # (cell probability 0.5 in a gap), each with a dim strip of true cell
    # along its outer edge (0.3). Components either join the cells through
    # the gap or, above 0.5, lose the strips; confident seeds grown over a
    # low threshold keep both cells whole and closed apart by a line.
    truth = np.zeros((20, 36), dtype=np.int32)
    truth[3:17, 2:16] = 1
    truth[3:17, 20:34] = 2
    cell = np.where(truth > 0, 0.95, 0.05)
    cell[3:17, 2:5] = cell[3:17, 31:34] = 0.3
    cell[8:12, 16:20] = 0.5
    probs = np.stack([1.0 - cell, cell]).astype(np.float32)
    chosen = choose_postprocessing([probs], [truth], metric="isbi")
    assert chosen["method"] == "seeded"
    assert chosen["threshold"] < 0.3 and chosen["seed_threshold"] >= 0.5
    components = choose_postprocessing([probs], [truth], metric="isbi", methods=["components"])
    assert chosen["score"] < 0.05 < components["score"]
    labels = probabilities_to_labels(probs, **postprocessing_options({"postprocessing": chosen}))
    assert score_labels([truth], [labels], "rand") == 0.0
    isbi = score_labels([truth], [labels], "isbi")
    assert isbi == pytest.approx(score_labels([truth], [labels], "pixel")) and isbi > 0
