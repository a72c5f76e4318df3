"""Overlap-tile prediction (Ronneberger et al. 2015, figure 2).

Images of any size are predicted tile by tile. Missing context at the image
borders is extrapolated by mirroring. For a ``padding="valid"`` U-Net the
output tiles abut exactly and the result equals one forward pass over the
whole mirror-padded image; for ``padding="same"`` models overlapping tiles are
blended.
"""

from __future__ import annotations

from ._dask import _aligned_chunks as _aligned_chunks
from ._dask import _model_key as _model_key
from ._dask import predict_dask
from ._plan import choose_tile_shape
from ._tiled import iter_predict_stack, iter_predict_tiled, predict_stack, predict_tiled
from ._tiler import _mirror_pad as _mirror_pad
from ._tiler import _Tiler as _Tiler

__all__ = [
    "choose_tile_shape",
    "iter_predict_stack",
    "iter_predict_tiled",
    "predict_dask",
    "predict_stack",
    "predict_tiled",
]
