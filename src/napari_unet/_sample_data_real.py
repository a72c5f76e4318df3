"""Real sample data for napari: fluorescence nuclei from the Data Science Bowl 2018.

The crop ships with the package (``models/pretrained/nuclei_sample_*.tif``,
about 30 KB): a 256 x 256 greyscale fluorescence image with 57 nuclei, several
touching, and their instance labels. It comes from the DSB 2018 stage1_train
set (BBBC038, Broad Institute; masks as fixed by the community), released
under CC0; please cite Caicedo et al. 2019 [1]_ when you use it. It is one of
the held-out validation images of the bundled ``nuclei`` model, so predicting
it with that model shows how the model does on an image it never saw.

References
----------
.. [1] J. C. Caicedo et al., "Nucleus segmentation across imaging experiments:
       the 2018 Data Science Bowl", Nature Methods 16, 1247-1253 (2019).
       :DOI:`10.1038/s41592-019-0612-7`
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import tifffile

from .pretrained import PRETRAINED_DIR

__all__ = ["load_dsb_nuclei", "make_dsb_nuclei"]

LayerData = tuple[np.ndarray, dict[str, Any], str]
_INFO = "nuclei_sample.json"


def load_dsb_nuclei() -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The DSB 2018 nuclei crop, its labels and its attribution.

    Returns
    -------
    image : ndarray of uint8, shape (256, 256)
        Greyscale fluorescence intensities.
    labels : ndarray of uint16, shape (256, 256)
        Nucleus instances 1..N, 0 = background.
    info : dict
        ``source``, ``licence``, ``attribution`` and ``objects`` (the number
        of nuclei).

    Examples
    --------
    >>> image, labels, info = load_dsb_nuclei()
    >>> image.shape, labels.dtype.name, info["objects"]
    ((256, 256), 'uint16', 57)
    """
    info = json.loads((PRETRAINED_DIR / _INFO).read_text(encoding="utf-8"))
    image = tifffile.imread(PRETRAINED_DIR / info["image"])
    labels = tifffile.imread(PRETRAINED_DIR / info["labels"])
    return image, labels, info


def make_dsb_nuclei() -> list[LayerData]:
    """napari sample: DSB 2018 fluorescence nuclei with their ground truth.

    Returns
    -------
    layers : list of (data, kwargs, layer_type)
        An ``"image"`` layer (the 256 x 256 crop) and a ``"labels"`` layer
        (its nucleus instances), each with a name and, in ``metadata``, the
        source, licence (CC0) and attribution.

    Examples
    --------
    >>> [(kwargs["name"], kind) for _, kwargs, kind in make_dsb_nuclei()]
    [('DSB 2018 nuclei', 'image'), ('DSB 2018 nuclei ground truth', 'labels')]
    """
    image, labels, info = load_dsb_nuclei()
    metadata = {key: info[key] for key in ("source", "licence", "attribution")}
    return [
        (image, {"name": "DSB 2018 nuclei", "metadata": dict(metadata)}, "image"),
        (
            labels,
            {"name": "DSB 2018 nuclei ground truth", "metadata": dict(metadata), "opacity": 0.5},
            "labels",
        ),
    ]
