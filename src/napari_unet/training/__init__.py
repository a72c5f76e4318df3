"""The training engine: samples in, a trained model file out.

Training follows the U-Net paper [1]_: each iteration draws a random valid
input tile from an annotated image, deforms it elastically together with its
targets and weight map, and takes one optimiser step on the weighted
cross-entropy (SGD with momentum 0.99 and one large tile per batch by
default). Weight maps are computed once per image and cached.

The loop is a generator, :func:`train_iter` (also named :func:`iter_train`),
that yields :class:`~napari_unet.progress.Progress` events after every
iteration; the napari widget runs it in a ``thread_worker`` and the command
line and :func:`train` drive it directly. Either way a cancel stops within
one iteration and leaves the last good model on disk.

The engine's phases live in named modules: :mod:`.config` (settings, result,
files), :mod:`.data` (samples, planes, targets, tiles, validation split),
:mod:`.batches` (tiles and augmentation), :mod:`.optim` (optimiser, schedule,
precision), :mod:`.validation` and :mod:`.run` (the run's phases and the loop).

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks
       for Biomedical Image Segmentation", MICCAI 2015.
       :DOI:`10.1007/978-3-319-24574-4_28`
"""

from .batches import _augmentation as _augmentation
from .batches import _Batcher as _Batcher
from .config import _LOSSES as _LOSSES
from .config import TrainConfig, TrainResult, checkpoint_paths
from .data import _BLOCK as _BLOCK
from .data import _PAPER_TILE as _PAPER_TILE
from .data import Sample, split_validation
from .data import _check_tile as _check_tile
from .data import _default_tile as _default_tile
from .data import _Plane as _Plane
from .data import _prepare_plane as _prepare_plane
from .data import _split_planes as _split_planes
from .data import _targets as _targets
from .data import _ValPlane as _ValPlane
from .run import iter_train, train, train_iter

__all__ = [
    "Sample",
    "TrainConfig",
    "TrainResult",
    "checkpoint_paths",
    "iter_train",
    "split_validation",
    "train",
    "train_iter",
]
