"""One segmentation pipeline: model + image + settings -> probabilities -> instance labels.

Every front end calls this module: ``napari-unet predict`` (both its
in-memory and its chunked path), the Predict widget (in-memory and lazy
layers) and Python users. It owns the steps between a model and labels, in
this order:

1. the model: a file, a bundled model name or a module (:func:`load_segmenter`),
   pruned to ``SegmentConfig.level`` for U-Net++;
2. the channel axis (:func:`napari_unet.axes.find_channel_axis`);
3. the model's stored normalisation (:class:`~napari_unet.normalize.Normalization`);
4. exact tiled prediction (:mod:`napari_unet.tiling`);
5. post-processing of every (Y, X) plane into instance labels, with ids
   unique over the whole stack (:mod:`napari_unet.postprocess`).

Three forms share those steps:

- :func:`segment` / :func:`iter_segment`: in memory; ids numbered
  ``1 ... N`` over the whole stack in C order of the planes.
- :func:`segment_dask`: lazy, one plane per Dask chunk, for napari; plane
  ``i`` has ids ``i * LAZY_ID_STRIDE + 1 ...`` (a plane cannot know how many
  cells the planes before it hold without computing them); with
  ``link_planes``, Z planes are linked as they are computed (:class:`PlaneLinker`).
- :func:`segment_chunked`: Zarr/TIFF in, OME-Zarr out, chunk by chunk with
  any Dask scheduler; ids merged across chunks by
  :func:`~napari_unet.postprocess.labels_dask`, and Z planes linked into 3D
  objects by one global relabel.

For the same model, image and settings, :func:`segment` gives the same
labels and probabilities whichever front end calls it (tested), and each
plane of :func:`segment_dask` is the same partition as :func:`segment`'s.
"""

from ._chunked import dask_scheduler, segment_chunked
from ._config import Segmentation, SegmentConfig, load_segmenter
from ._lazy import LAZY_ID_STRIDE, lazy_linker, segment_dask
from ._link_lazy import PlaneLinker
from ._memory import iter_segment, segment

__all__ = [
    "LAZY_ID_STRIDE",
    "PlaneLinker",
    "SegmentConfig",
    "Segmentation",
    "dask_scheduler",
    "iter_segment",
    "lazy_linker",
    "load_segmenter",
    "segment",
    "segment_chunked",
    "segment_dask",
]
