"""Safe outputs: checked before the work starts, written atomically, never a surprise.

Every file napari-unet writes for a user goes through here:

* :func:`check_outputs` resolves every output path before any work starts
  and refuses one that would replace an input, resolves outside the output
  folder, is a symbolic link (links at the final name are never followed),
  exists without ``overwrite``, or sits in a folder that cannot be written.
* :func:`atomic_path` and its users (:func:`write_bytes`, :func:`write_json`)
  write under a temporary name in the target folder, ``fsync`` it and rename
  it over the final name with :func:`os.replace`; on any failure, including
  Ctrl-C, the temporary file is removed and the final name keeps its old
  content (or stays absent). A crash (SIGKILL, power loss) can leave the
  temporary file only, never a truncated file under the final name;
  :func:`remove_orphans` removes such files at the next start.
* Files get the permissions the umask gives (``0o666 & ~umask``), as a
  plain ``open()`` would, not the ``0o600`` of a temporary file.

Temporary names are ``.<final name>.<random>.napari-unet.tmp`` (a folder
for Zarr stores), hidden, in the target folder, so the rename never crosses
file systems.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import OutputError, OutputExistsError, output_error

__all__ = [
    "TMP_SUFFIX",
    "atomic_path",
    "check_output",
    "check_outputs",
    "check_writable",
    "current_umask",
    "remove_orphans",
    "replace_with",
    "temporary_for",
    "write_bytes",
    "write_json",
]

#: The ending of every temporary name napari-unet writes (see :func:`remove_orphans`).
TMP_SUFFIX = ".napari-unet.tmp"


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows.

    Examples
    --------
    >>> 0 <= current_umask() <= 0o777
    True
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere the only way is to set it and put it back (briefly racy with threads).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output(
    path: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    root: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Check that one output may be written, and return its resolved path.

    Parameters
    ----------
    path : str or Path
        The output file (or Zarr folder) to write. Its folder need not exist
        yet when ``root`` is given (it is created inside ``root``).
    inputs : iterable of path, optional
        Files read by the same run; an output that resolves to one of them
        (same file, through any link or relative path) is refused.
    root : str or Path, optional
        The output folder the user chose: an output that resolves outside it
        (through a symbolic link in a sub-folder) is refused.
    overwrite : bool, optional
        Replace an existing file (never a symbolic link, never an input).

    Returns
    -------
    resolved : Path
        The absolute path that will be written (the folder resolved, the
        final name kept as given).

    Raises
    ------
    OutputError
        If the output would replace an input, resolves outside ``root``,
        is a symbolic link, is a folder where a file is expected, or its
        folder does not exist.
    OutputExistsError
        If it exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.is_symlink():
        raise OutputError(
            f"{path} is a symbolic link; napari-unet never writes through a link at an output "
            "name: remove the link or choose another output folder",
            path=path,
        )
    resolved = path.parent.resolve() / path.name
    if root is not None:
        top = Path(root).resolve()
        if not resolved.is_relative_to(top):
            raise OutputError(
                f"{path} resolves to {resolved}, outside the output folder {top} (a symbolic "
                "link on the way); remove the link or choose another output folder",
                path=path,
            )
    for item in inputs:
        source = Path(item)
        if resolved == source.resolve() or (
            resolved.exists() and source.exists() and os.path.samefile(resolved, source)
        ):
            raise OutputError(
                f"{path} is the input file {source}; writing it would replace the input: "
                "choose another output folder",
                path=path,
            )
    if root is None and not resolved.parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {path.parent} does not exist", path=path)
    if resolved.exists():
        if not overwrite:
            raise OutputExistsError(f"{path} exists; pass --overwrite to replace it", path=path)
    return resolved


def check_writable(folder: str | os.PathLike) -> None:
    """Check that files can be created in ``folder`` (by creating and removing one).

    Permissions alone do not tell (read-only mounts, ACLs, root squash), so
    this tries. Raises :class:`OutputError` naming the folder and the fix.
    """
    folder = Path(folder)
    try:
        fd, name = tempfile.mkstemp(prefix=".write-test.", suffix=TMP_SUFFIX, dir=folder)
    except OSError as err:
        raise output_error(err, folder, "write to the folder") from err
    os.close(fd)
    os.unlink(name)


def check_outputs(
    paths: Sequence[str | os.PathLike],
    *,
    inputs: Iterable[str | os.PathLike] = (),
    root: str | os.PathLike | None = None,
    overwrite: bool = False,
    create: bool = True,
) -> list[Path]:
    """Check every output of a run before the run starts (see :func:`check_output`).

    Also refuses two outputs with the same name, and checks that each
    output folder can be written (creating the missing ones when
    ``create``, inside ``root`` only).

    Returns
    -------
    resolved : list of Path
        The resolved output paths, in order.
    """
    inputs = list(inputs)
    resolved = [check_output(p, inputs=inputs, root=root, overwrite=overwrite) for p in paths]
    seen: dict[Path, Path] = {}
    for given, full in zip(paths, resolved, strict=True):
        if full in seen:
            raise OutputError(
                f"{seen[full]} and {given} are the same output; rename one input", path=full
            )
        seen[full] = Path(given)
    for folder in sorted({p.parent for p in resolved}):
        if create and not folder.is_dir():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise output_error(err, folder, "create the folder") from err
        check_writable(folder)
    return resolved


def _tmp_name(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, *, overwrite: bool = True, folder: bool = False
) -> Iterator[Path]:
    """Write to a temporary path that becomes ``path`` only when complete.

    Parameters
    ----------
    path : str or Path
        The final name. A symbolic link there is refused.
    overwrite : bool, optional
        Replace an existing ``path``; False raises :class:`OutputExistsError`.
    folder : bool, optional
        The output is a folder (a Zarr store): the temporary path is an
        empty folder, and an existing folder at ``path`` is replaced only
        after the new one is complete.

    Yields
    ------
    tmp : Path
        Where to write, in the same folder as ``path``.

    Raises
    ------
    OutputError
        For any ``OSError`` while writing or renaming (the message names
        ``path`` and the fix), or a symbolic link at ``path``.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(out) as tmp:
    ...     _ = tmp.write_text("done")
    >>> out.read_text()
    'done'
    """
    path = Path(path)
    if path.is_symlink():
        check_output(path, overwrite=overwrite)  # raises the message about links
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it", path=path)
    tmp = temporary_for(path, folder=folder)
    try:
        yield tmp
        _finish(tmp, path, folder)
    except BaseException as err:
        # Also on KeyboardInterrupt and SystemExit: never leave the temporary behind.
        _remove(tmp)
        if isinstance(err, OSError):
            raise output_error(err, path) from err
        raise


def temporary_for(path: str | os.PathLike, *, folder: bool = False) -> Path:
    """A new, empty temporary file (or folder) beside ``path`` to write an output into.

    Named like every napari-unet temporary (:func:`remove_orphans` finds
    it after a crash). Move it into place with :func:`replace_with`; remove
    it on failure. :func:`atomic_path` does both.
    """
    path = Path(path)
    try:
        tmp = _tmp_name(path)
        if folder:
            tmp.unlink()
            tmp.mkdir()
    except OSError as err:
        raise output_error(err, path) from err
    return tmp


def replace_with(tmp: str | os.PathLike, path: str | os.PathLike, *, folder: bool = False) -> None:
    """Move a complete temporary output over ``path`` (see :func:`atomic_path`).

    Files: permissions from the umask, ``fsync``, then one atomic
    :func:`os.replace`. Folders: an existing folder at ``path`` is renamed
    away first and removed once the new one is in place.
    """
    try:
        _finish(Path(tmp), Path(path), folder)
    except OSError as err:
        raise output_error(err, path) from err


def _finish(tmp: Path, path: Path, folder: bool) -> None:
    mode = 0o666 & ~current_umask()
    if folder:
        # Folders: rename the old one away first (os.replace cannot replace a
        # non-empty folder), then remove it once the new one is in place.
        os.chmod(tmp, 0o777 & ~current_umask())
        old = None
        if path.exists():
            old = _tmp_name(path)
            old.unlink()
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            _remove(old)
    else:
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename durable; not possible on every platform (Windows).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return path


def write_json(path: str | os.PathLike, data: Any, *, overwrite: bool = False) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically.

    NaN and infinity are written as ``null`` (strict JSON has neither).

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    OutputError
        If it cannot be written (the message names the file and the fix).
    """
    text = json.dumps(_finite(data), indent=2, allow_nan=False) + "\n"
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # NumPy scalars
        return _finite(value.item())
    return value


def remove_orphans(folder: str | os.PathLike, *, older_than: float | None = None) -> list[Path]:
    """Remove temporary files and folders left in ``folder`` by an interrupted run.

    Only names napari-unet makes (hidden, ending in :data:`TMP_SUFFIX`)
    are touched, and only those last modified before ``older_than`` (a
    :func:`time.time` value; default: now minus one minute, so that a run
    writing into the same folder right now keeps its files).

    Returns
    -------
    removed : list of Path
        What was removed.
    """
    folder = Path(folder)
    limit = time.time() - 60 if older_than is None else older_than
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
            continue
        try:
            if entry.lstat().st_mtime >= limit:
                continue
        except OSError:
            continue
        _remove(entry)
        removed.append(entry)
    return removed
