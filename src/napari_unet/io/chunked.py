"""Chunked images for arrays larger than memory (used by ``napari-unet predict``).

:func:`open_chunked` reads Zarr, OME-Zarr (the first multiscale level) and
TIFF files lazily as Dask arrays, and :func:`create_ome_zarr` makes an
OME-Zarr image to store one into.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .images import _TIFF_SUFFIXES, _suffix

if TYPE_CHECKING:
    import dask.array
    import zarr

__all__ = ["ChunkedImage", "create_ome_zarr", "is_zarr", "open_chunked"]


#: Axis names given to arrays without OME metadata, by number of axes.
_DEFAULT_AXES = {2: ("y", "x"), 3: ("z", "y", "x"), 4: ("t", "z", "y", "x")}
_NGFF_VERSION = "0.4"


def is_zarr(path: str | Path) -> bool:
    """True for a Zarr store: a ``.zarr`` path, or a folder with Zarr metadata.

    Examples
    --------
    >>> is_zarr("cells.zarr"), is_zarr("cells.tif")
    (True, False)
    """
    path = Path(path)
    if path.suffix.lower() == ".zarr":
        return True
    return path.is_dir() and any(
        (path / name).is_file() for name in ("zarr.json", ".zarray", ".zgroup")
    )


class ChunkedImage:
    """A lazily read image: the Dask array and what its metadata says about it.

    Attributes
    ----------
    data : dask.array.Array
        The pixels, axis order as stored.
    axes : tuple of str
        One name per axis (``"c"``, ``"t"``, ``"z"``, ``"y"``, ``"x"``, ...),
        from OME-Zarr ``axes`` when present, else guessed from the number of
        axes (``_DEFAULT_AXES``; a 5-axis array is ``t, c, z, y, x``).
    channel_axis : int or None
        The axis whose OME type is ``"channel"``, if any.
    scale : tuple of float
        Pixel size per axis from the level's ``scale`` transformation (1.0
        without OME metadata).
    source : str
        Where the data came from (the Zarr array path inside the store, or
        the TIFF file).
    """

    def __init__(
        self,
        data: dask.array.Array,
        axes: Sequence[str],
        channel_axis: int | None,
        scale: Sequence[float],
        source: str,
    ) -> None:
        self.data = data
        self.axes = tuple(axes)
        self.channel_axis = channel_axis
        self.scale = tuple(float(v) for v in scale)
        self.source = source


def open_chunked(path: str | Path, *, chunks: Sequence[int] | None = None) -> ChunkedImage:
    """Open a Zarr array, an OME-Zarr image or a TIFF file as a lazy Dask array.

    Parameters
    ----------
    path : str or Path
        A Zarr array; a Zarr group with OME-NGFF ``multiscales`` metadata
        (Zarr v2 ``.zattrs``, NGFF 0.4, or Zarr v3 ``zarr.json`` with the
        metadata under ``"ome"``, NGFF 0.5), of which the first (full
        resolution) level is read; a Zarr group holding exactly one array;
        or a ``.tif``/``.tiff`` file.
    chunks : sequence of int, optional
        Chunks for TIFF files (Zarr keeps its own chunks). Default: one plane
        by 512 x 512 pixels.

    Returns
    -------
    image : ChunkedImage
        The lazy array and its axes, channel axis and pixel size.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ValueError
        If it is not a Zarr store or TIFF file, or a Zarr group with no
        multiscales metadata and not exactly one array.

    Notes
    -----
    TIFF files are read region by region, never whole: uncompressed
    contiguous data with plain file reads of the rows a chunk needs
    (``tifffile`` gives the data offset); compressed or tiled files
    through ``tifffile.imread(aszarr=True)``, which decodes only the strips
    or tiles a chunk touches (a compressed file with one strip per page is
    therefore read a page at a time). The reader holds only the path, so it
    can be sent to the workers of a distributed cluster; each opens the
    file itself.
    """
    import dask.array as da

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if _suffix(path) in _TIFF_SUFFIXES:
        return _open_tiff(path, chunks)
    if not is_zarr(path):
        raise ValueError(f"{path} is neither a Zarr store nor a TIFF file")
    import zarr

    node = zarr.open(str(path), mode="r")
    component = ""
    axes: Sequence[str] | None = None
    channel_axis = None
    scale: Sequence[float] | None = None
    if isinstance(node, zarr.Group):
        component, axes, channel_axis, scale = _group_level(node, path)
    data = da.from_zarr(str(path), component=component or None)
    if axes is None or len(axes) != data.ndim:
        axes = _DEFAULT_AXES.get(data.ndim, ("t", "c", "z", "y", "x")[-data.ndim :])
        if data.ndim == 5:
            channel_axis = 1
    if scale is None or len(scale) != data.ndim:
        scale = (1.0,) * data.ndim
    source = f"{path}/{component}" if component else str(path)
    return ChunkedImage(data, axes, channel_axis, scale, source)


def _open_tiff(path: Path, chunks: Sequence[int] | None) -> ChunkedImage:
    """A TIFF file as a lazy Dask array read region by region (see :func:`open_chunked`)."""
    import dask.array as da

    reader = _TiffReader(path)
    if chunks is None:
        chunks = (1,) * (len(reader.shape) - 2) + (512, 512)
    data = da.from_array(
        reader,
        chunks=tuple(chunks),
        lock=False,
        asarray=False,
        meta=np.empty((0,) * len(reader.shape), reader.dtype),
        name=f"tiff-{_token(path)}",
    )
    axes = _DEFAULT_AXES.get(data.ndim, ("t", "c", "z", "y", "x")[-data.ndim :])
    return ChunkedImage(data, axes, None, (1.0,) * data.ndim, str(path))


def _group_level(
    node: Any, path: Path
) -> tuple[str, Sequence[str] | None, int | None, Sequence[float] | None]:
    """(component, axes, channel axis, scale) of a Zarr group's full-resolution array.

    From OME-NGFF ``multiscales`` metadata, or the group's only array (no
    axes, channel axis or scale then).
    """
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    if not multiscales:
        arrays = sorted(name for name, _ in node.arrays())
        if len(arrays) != 1:
            raise ValueError(
                f"{path} is a Zarr group without OME-Zarr 'multiscales' metadata and with "
                f"{len(arrays)} arrays ({', '.join(arrays[:5]) or 'none'}); give the path "
                "of one array (e.g. store.zarr/name)"
            )
        return arrays[0], None, None, None
    first = multiscales[0]
    level = first["datasets"][0]
    axes: list[str] | None = None
    channel_axis: int | None = None
    scale: Sequence[float] | None = None
    names = first.get("axes")
    if names:
        axes = [a["name"] if isinstance(a, dict) else str(a) for a in names]
        types = [a.get("type") if isinstance(a, dict) else None for a in names]
        if "channel" in types:
            channel_axis = types.index("channel")
        elif "c" in axes:
            channel_axis = axes.index("c")
    for transform in level.get("coordinateTransformations") or []:
        if transform.get("type") == "scale":
            scale = transform["scale"]
    return level["path"], axes, channel_axis, scale


def create_ome_zarr(
    path: str | Path,
    *,
    shape: Sequence[int],
    chunks: Sequence[int],
    dtype: Any,
    axes: Sequence[str],
    scale: Sequence[float] | None = None,
    name: str | None = None,
    label: bool = False,
) -> zarr.Array:
    """Create an empty single-level OME-Zarr image (NGFF 0.4, Zarr v2) to store into.

    Parameters
    ----------
    path : str or Path
        The store (a folder, usually named ``*.zarr``); replaced if it exists.
    shape, chunks : sequence of int
        Array shape and chunk shape.
    dtype : dtype
        Pixel type.
    axes : sequence of str
        One name per axis; ``"c"`` is typed ``channel``, ``"t"`` ``time``,
        ``"z"``, ``"y"``, ``"x"`` ``space`` (with unit-less pixel sizes).
    scale : sequence of float, optional
        Pixel size per axis (1.0 by default).
    name : str, optional
        The image name in the metadata.
    label : bool, optional
        Also mark the image as a label image (``image-label`` metadata).

    Returns
    -------
    array : zarr.Array
        The full-resolution level ``"0"``, filled with 0, ready for
        ``dask.array.store``.

    Notes
    -----
    The group holds ``multiscales`` with one dataset, ``"0"``, and a
    ``scale`` transformation, the minimum NGFF 0.4 asks for, readable by
    napari-ome-zarr, ome-zarr-py, Fiji (MoBIE/n5-viewer) and QuPath. NGFF 0.4
    sits on Zarr v2, which more readers understand today than NGFF 0.5 on
    Zarr v3; :func:`open_chunked` reads both.
    """
    import zarr

    axes = list(axes)
    if len(axes) != len(shape):
        raise ValueError(f"`axes` {axes} must name every axis of shape {tuple(shape)}")
    types = {"c": "channel", "t": "time", "z": "space", "y": "space", "x": "space"}
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = group.create_array(
        "0",
        shape=tuple(int(s) for s in shape),
        chunks=tuple(int(c) for c in chunks),
        dtype=dtype,
        fill_value=0,
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    entries = [{"name": a, **({"type": types[a]} if a in types else {})} for a in axes]
    scale = [1.0] * len(axes) if scale is None else [float(v) for v in scale]
    multiscale: dict[str, Any] = {
        "version": _NGFF_VERSION,
        "axes": entries,
        "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        ],
    }
    if name:
        multiscale["name"] = name
    attrs: dict[str, Any] = {"multiscales": [multiscale]}
    if label:
        attrs["image-label"] = {"version": _NGFF_VERSION}
    group.attrs.update(attrs)
    return array


def _token(path: Path) -> str:
    import hashlib

    stat = path.stat()
    text = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class _TiffReader:
    """Array-like view of a TIFF file's first series that reads only what is sliced.

    Pickles as its path (workers of a distributed cluster reopen the file).
    """

    def __init__(self, path: Path) -> None:
        import tifffile

        self.path = Path(path)
        try:
            with tifffile.TiffFile(self.path) as tif:
                series = tif.series[0]
                self.shape = tuple(int(s) for s in series.shape)
                self._stored = np.dtype(series.dtype).newbyteorder(tif.byteorder)
                # Contiguous, uncompressed data starts here (None otherwise).
                self.offset = series.dataoffset
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read image {self.path}: {err}") from err
        self.dtype = self._stored.newbyteorder("=")
        self.ndim = len(self.shape)
        self._zarr = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_zarr": None}

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        if self.offset is not None and all(
            isinstance(k, slice) and k.step in (None, 1) for k in key
        ):
            return self._read_rows(
                [k.indices(n)[:2] for k, n in zip(key, self.shape, strict=True)]
            )
        if self._zarr is None:
            import tifffile
            import zarr

            self._zarr = zarr.open(tifffile.imread(self.path, aszarr=True), mode="r")
        return np.asarray(self._zarr[key]).astype(self.dtype, copy=False)

    def _read_rows(self, ranges: list[tuple[int, int]]) -> np.ndarray:
        """Read whole rows of the planes a region covers, then cut the columns."""
        (y0, y1), (x0, x1) = ranges[-2], ranges[-1]
        lead = ranges[:-2]
        width = self.shape[-1]
        out = np.empty([max(0, b - a) for a, b in ranges], dtype=self.dtype)
        if out.size == 0:
            return out
        with open(self.path, "rb") as handle:
            for index in np.ndindex(*out.shape[:-2]):
                plane = int(
                    np.ravel_multi_index(
                        tuple(a + i for (a, _), i in zip(lead, index, strict=True)),
                        self.shape[:-2],
                    )
                    if lead
                    else 0
                )
                start = (plane * self.shape[-2] + y0) * width
                handle.seek(self.offset + start * self._stored.itemsize)
                rows = np.fromfile(handle, dtype=self._stored, count=(y1 - y0) * width)
                out[index] = rows.reshape(y1 - y0, width)[:, x0:x1]
        return out
