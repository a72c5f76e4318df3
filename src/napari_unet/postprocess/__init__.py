"""From class probabilities to instance labels.

The network predicts, per pixel, the probability of each class. The class
convention is shared with ``napari_unet.weights.instances_to_classes``:

- class 0: background
- class 1: cell (interior)
- class 2 (optional, ``num_classes == 3``): the separating border between
  touching cells (Ronneberger et al. 2015, Fig. 3)

:func:`probabilities_to_labels` turns those probabilities into a label image
(0 = background, 1..N = cells). :func:`labels_dask` does the same for chunked
(larger-than-memory) Dask arrays: every chunk is labelled with a margin of its
neighbours and the ids are merged across chunk borders.
"""

from __future__ import annotations

from ._chunked import labels_dask
from ._labels import probabilities_to_labels

__all__ = ["labels_dask", "probabilities_to_labels"]
