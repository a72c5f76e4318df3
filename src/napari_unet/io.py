"""Reading and writing files: images for the command line, and model files.

Image I/O: TIFF goes through tifffile (any dtype, any number of axes, stacks);
PNG, JPEG, BMP and GIF go through imageio (2D, uint8/uint16). Nothing here
guesses axes: arrays come back exactly as stored, axis order untouched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._modelfile import (
    ModelFileError,
    load_checkpoint,
    load_model,
    read_metadata,
    save_model,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "ModelFileError",
    "list_images",
    "load_checkpoint",
    "load_model",
    "read_image",
    "read_metadata",
    "save_model",
    "write_image",
]

# ---------------------------------------------------------------------------
# Images (used by `napari-unet evaluate` / `predict`)
# ---------------------------------------------------------------------------

_TIFF_SUFFIXES = (".tif", ".tiff")
_IMAGEIO_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
#: File name endings (lower case) that :func:`read_image` understands.
IMAGE_SUFFIXES: tuple[str, ...] = _TIFF_SUFFIXES + _IMAGEIO_SUFFIXES


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file into a NumPy array.

    Parameters
    ----------
    path : str or Path
        A ``.tif``/``.tiff`` file (read with tifffile: all pages, any dtype,
        e.g. (Z, Y, X) stacks) or a ``.png``/``.jpg``/``.jpeg``/``.bmp``/``.gif``
        file (read with imageio: (Y, X) grey or (Y, X, C) colour).

    Returns
    -------
    image : ndarray
        The stored array, dtype and axis order as in the file.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist or is not a file.
    ValueError
        If the suffix is not supported or the file cannot be decoded.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.tif"
    >>> write_image(path, np.arange(6, dtype=np.uint16).reshape(2, 3))
    >>> read_image(path).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    suffix = _suffix(path)
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(
            f"cannot read {path}: unsupported file type {suffix or '(no suffix)'!r}; "
            f"supported: {', '.join(IMAGE_SUFFIXES)}"
        )
    try:
        if suffix in _TIFF_SUFFIXES:
            import tifffile

            return np.asarray(tifffile.imread(path))
        import imageio.v3 as iio

        # Pillow explicitly: imageio would otherwise try every plugin on a
        # broken file (and warn about deprecated ones) before failing.
        return np.asarray(iio.imread(path, plugin="pillow"))
    # Both readers raise ValueError (tifffile.TiffFileError is one) or OSError
    # for truncated/corrupt files; say which file it was.
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def write_image(path: str | Path, array: np.ndarray) -> None:
    """Write an array to an image file, the format chosen by the suffix.

    Parameters
    ----------
    path : str or Path
        Destination; its folder must exist. ``.tif``/``.tiff`` stores any
        shape and numeric dtype (labels, probabilities, stacks); ``.png``
        stores (Y, X) or (Y, X, 3|4) ``uint8``/``uint16``; ``.jpg`` (lossy)
        stores ``uint8`` only.
    array : ndarray
        The data to write.

    Raises
    ------
    FileNotFoundError
        If the destination folder does not exist.
    ValueError
        If the suffix is unsupported, or the dtype/shape cannot be stored in
        that format (use ``.tif`` for labels beyond uint16 or floats).
    """
    path = Path(path)
    array = np.asarray(array)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    suffix = _suffix(path)
    if suffix in _TIFF_SUFFIXES:
        import tifffile

        # minisblack: keep the axes as given; never reinterpret a trailing
        # axis of 3 as RGB.
        tifffile.imwrite(path, array, photometric="minisblack")
        return
    if suffix not in _IMAGEIO_SUFFIXES:
        raise ValueError(
            f"cannot write {path}: unsupported file type {suffix or '(no suffix)'!r}; "
            f"supported: {', '.join(IMAGE_SUFFIXES)}"
        )
    allowed = (np.uint8,) if suffix in (".jpg", ".jpeg") else (np.uint8, np.uint16)
    if array.dtype not in allowed:
        names = " or ".join(np.dtype(d).name for d in allowed)
        raise ValueError(
            f"`array` (dtype {array.dtype}) cannot be stored as {suffix}: expected {names}; "
            "write a .tif file instead"
        )
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ValueError(
            f"`array` (shape {array.shape}) cannot be stored as {suffix}: expected "
            "(Y, X) or (Y, X, 3|4); write a .tif file instead"
        )
    import imageio.v3 as iio

    iio.imwrite(path, array, plugin="pillow")


def list_images(dir_or_file: str | Path) -> list[Path]:
    """List the image files in a folder, or check a single image file.

    Parameters
    ----------
    dir_or_file : str or Path
        A folder (its direct children are listed, not sub-folders; hidden
        files are skipped) or one image file.

    Returns
    -------
    paths : list of Path
        Files whose suffix is in :data:`IMAGE_SUFFIXES` (case-insensitive),
        sorted by name; ``[dir_or_file]`` for a file. Possibly empty for a
        folder.

    Raises
    ------
    FileNotFoundError
        If `dir_or_file` does not exist.
    ValueError
        If `dir_or_file` is a file with an unsupported suffix.
    """
    path = Path(dir_or_file)
    if path.is_file():
        if _suffix(path) not in IMAGE_SUFFIXES:
            raise ValueError(
                f"{path} is not a supported image file; supported: {', '.join(IMAGE_SUFFIXES)}"
            )
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or folder: {path}")
    return sorted(
        child
        for child in path.iterdir()
        if child.is_file() and not child.name.startswith(".") and _suffix(child) in IMAGE_SUFFIXES
    )


# ---------------------------------------------------------------------------
# Models: one safetensors file with the weights and JSON metadata; loading
# never unpickles (see napari_unet._modelfile).
# ---------------------------------------------------------------------------

# ``save_model``, ``load_model`` and friends are imported at the top.
