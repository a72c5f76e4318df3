"""Reading and writing image files: whole images and label images.

Image I/O: TIFF goes through tifffile (any dtype, any number of axes, stacks);
PNG, JPEG, BMP and GIF go through imageio (2D, uint8/uint16). Nothing here
guesses axes: arrays come back exactly as stored, axis order untouched.

Chunked stores (Zarr, OME-Zarr, large TIFF) are in :mod:`napari_unet.io.chunked`.
"""

from __future__ import annotations

import json
import math
import struct
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..outputs import atomic_path

__all__ = [
    "IMAGE_SUFFIXES",
    "files_by_stem",
    "is_colour_file",
    "list_images",
    "pair_by_stem",
    "read_image",
    "read_labels",
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
    napari_unet.errors.InputError
        (a ``ValueError``) If the suffix is not supported, the file cannot be
        decoded, or it holds no pixels (0 x N, header only).

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
        raise InputError(
            f"cannot read {path}: unsupported file type {suffix or '(no suffix)'!r}; "
            f"supported: {', '.join(IMAGE_SUFFIXES)}",
            path=path,
        )
    try:
        with warnings.catch_warnings():
            # tifffile warns about (and then returns nothing for) broken headers;
            # the checks below say what is wrong instead.
            warnings.simplefilter("ignore")
            if suffix in _TIFF_SUFFIXES:
                image = _read_tiff(path)
            else:
                import imageio.v3 as iio

                # Pillow explicitly: imageio would otherwise try every plugin on a
                # broken file (and warn about deprecated ones) before failing.
                image = np.asarray(iio.imread(path, plugin="pillow"))
    # Both readers raise ValueError (tifffile.TiffFileError is one), OSError
    # or struct.error for truncated/corrupt files; say which file it was.
    except PermissionError as err:
        raise InputError(
            f"cannot read image {path}: permission denied; ask its owner for read access "
            "or copy it somewhere you can read",
            path=path,
        ) from err
    except (OSError, ValueError, struct.error, IndexError, KeyError) as err:
        raise InputError(
            f"cannot read image {path}: {err or type(err).__name__}; the file is damaged "
            "or not a readable image",
            path=path,
        ) from err
    if image.size == 0 or image.ndim == 0:
        raise InputError(
            f"image {path} holds no pixels (shape {image.shape}): the file is empty or "
            "only a header; write it again or remove it from the input folder",
            path=path,
        )
    return image


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        return np.asarray(tifffile.imread(path))
    except IndexError:
        # tifffile cannot rebuild the series of a file it wrote with only axes
        # of length 1 (e.g. (1, 1, 1, 1, 1)); read the pages and apply the
        # shape stored in the file's description.
        with tifffile.TiffFile(path, is_shaped=False) as tif:
            data = tif.asarray()
            description = tif.pages.first.description or ""
        shape = json.loads(description).get("shape") if description.startswith("{") else None
        if shape is None or math.prod(shape) != data.size:
            raise
        return data.reshape(shape)


def write_image(path: str | Path, array: np.ndarray, *, overwrite: bool = True) -> None:
    """Write an array to an image file, the format chosen by the suffix.

    Parameters
    ----------
    path : str or Path
        Destination; its folder must exist. ``.tif``/``.tiff`` stores any
        shape and numeric dtype (labels, probabilities, stacks); ``.png``
        stores (Y, X) or (Y, X, 3|4) ``uint8``/``uint16``; ``.jpg`` (lossy)
        stores ``uint8`` only.
    array : ndarray
        The data to write (not empty).
    overwrite : bool, optional
        Replace an existing file; False raises
        :class:`~napari_unet.errors.OutputExistsError`.

    Raises
    ------
    FileNotFoundError
        If the destination folder does not exist.
    ValueError
        If the suffix is unsupported, the array is empty, or the dtype/shape
        cannot be stored in that format (use ``.tif`` for labels beyond
        uint16 or floats).
    napari_unet.errors.OutputError
        If the file cannot be written (disk full, read-only, permission
        denied: the message names the file and the fix), or `path` is a
        symbolic link.

    Notes
    -----
    The file is written under a temporary name in the same folder and
    renamed when complete (:func:`napari_unet.outputs.atomic_path`): after
    a crash or Ctrl-C `path` holds the previous file or none, never a
    truncated one.
    """
    path = Path(path)
    array = np.asarray(array)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    suffix = _suffix(path)
    if array.size == 0 or array.ndim < 2:
        raise ValueError(
            f"`array` of shape {array.shape} is not an image (empty, or fewer than 2 axes): "
            f"nothing to write to {path}"
        )
    if suffix in _TIFF_SUFFIXES:
        import tifffile

        with atomic_path(path, overwrite=overwrite) as tmp:
            # minisblack: keep the axes as given; never reinterpret a trailing
            # axis of 3 as RGB.
            tifffile.imwrite(tmp, array, photometric="minisblack")
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

    with atomic_path(path, overwrite=overwrite) as tmp:
        iio.imwrite(tmp, array, plugin="pillow", extension=suffix)


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


def files_by_stem(dir_or_file: str | Path, *, name: str = "input") -> dict[str, Path]:
    """The image files of a folder (or one file) keyed by file name without suffix.

    Raises
    ------
    InputError
        If there are no image files, or two files share a name (``a.png``, ``a.tif``).
    """
    try:
        files = list_images(dir_or_file)
    except (FileNotFoundError, ValueError) as err:
        raise InputError(f"{name}: {err}", path=dir_or_file) from err
    if not files:
        raise InputError(f"{name}: no image files in {dir_or_file}", path=dir_or_file)
    table: dict[str, Path] = {}
    for path in files:
        if path.stem in table:
            raise InputError(
                f"{name}: two files with the same name: {table[path.stem].name}, {path.name}",
                path=path,
            )
        table[path.stem] = path
    return table


def pair_by_stem(
    first: str | Path, second: str | Path, *, names: tuple[str, str] = ("first", "second")
) -> list[tuple[str, Path, Path]]:
    """Pair the image files of two folders by name without suffix (``a.tif`` <-> ``a.png``).

    A file against a folder is paired with its namesake; two files are paired
    whatever their names.

    Parameters
    ----------
    first, second : str or Path
        Folders or image files.
    names : (str, str)
        What to call them in messages (e.g. ``("--pred", "--gt")``).

    Returns
    -------
    pairs : list of (stem, first file, second file)
        Sorted by stem.

    Raises
    ------
    InputError
        If a file of either side has no partner, or a side has no image files.
    """
    one, two = files_by_stem(first, name=names[0]), files_by_stem(second, name=names[1])
    if Path(first).is_file() and Path(second).is_file():
        (a,), (b,) = one.values(), two.values()
        return [(a.stem, a, b)]
    # One file against a folder: that file only.
    if Path(first).is_file():
        two = {stem: path for stem, path in two.items() if stem in one}
    elif Path(second).is_file():
        one = {stem: path for stem, path in one.items() if stem in two}
    problems = []
    if set(two) - set(one):
        problems.append(
            f"no {names[0]} for {', '.join(two[s].name for s in sorted(set(two) - set(one)))}"
        )
    if set(one) - set(two):
        problems.append(
            f"no {names[1]} for {', '.join(one[s].name for s in sorted(set(one) - set(two)))}"
        )
    if problems:
        raise InputError("; ".join(problems))
    return [(stem, one[stem], two[stem]) for stem in sorted(one)]


def is_colour_file(path: str | Path, image: np.ndarray) -> bool:
    """A PNG/JPEG-style (Y, X, 3|4) colour image (TIFF stacks are never guessed to be colour)."""
    return (
        _suffix(Path(path)) not in _TIFF_SUFFIXES and image.ndim == 3 and image.shape[-1] in (3, 4)
    )


def read_labels(path: str | Path) -> np.ndarray:
    """Read a label image: non-negative integers, 0 = background.

    Grey label images saved as colour (all colours equal) are accepted;
    float images holding whole numbers become int64.

    Raises
    ------
    InputError
        If the file is a colour image, holds non-integer or negative values.
    """
    labels = read_image(path)
    if is_colour_file(path, labels):
        colour = labels[..., :3]
        if not (colour == colour[..., :1]).all():
            raise InputError(
                f"{path} is a colour image, expected a single-channel label image", path=path
            )
        labels = colour[..., 0]
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(labels == np.round(labels)):
            raise InputError(
                f"{path} (dtype {labels.dtype}) is not a label image: expected integer labels; "
                "turn probabilities into labels first",
                path=path,
            )
        labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise InputError(f"{path} contains negative labels", path=path)
    return labels
