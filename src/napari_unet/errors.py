"""The errors and warnings napari-unet raises for expected failures.

Every failure a user can cause or meet (a bad file, a full disk, a folder
they cannot write to) is raised as one of these classes, with a message that
names the file, the problem and the fix. Each carries the process exit code
the command line returns for it, so the command line maps any of them to one
printed line and a distinct exit status:

=========================  ====  ================================================
class                      code  meaning
=========================  ====  ================================================
:class:`UsageError`        2     wrong options or arguments (as argparse)
:class:`InputError`        3     an input file or array cannot be used
:class:`OutputError`       4     an output cannot be written (I/O, permissions)
``KeyboardInterrupt``      130   interrupted (Ctrl-C): :data:`EXIT_INTERRUPTED`
=========================  ====  ================================================

They subclass the built-in exceptions that existing callers catch:
``InputError`` and ``UsageError`` are ``ValueError`` s, ``OutputError`` is an
``OSError`` and :class:`OutputExistsError` a ``FileExistsError``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = [
    "EXIT_INTERRUPTED",
    "DataWarning",
    "InputError",
    "NapariUnetError",
    "OutputError",
    "OutputExistsError",
    "RedundantComputeWarning",
    "UsageError",
    "exit_code",
    "output_error",
]

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


class NapariUnetError(Exception):
    """Base class of the expected failures; ``exit_code`` is the CLI status."""

    exit_code: int = 1

    def __init__(self, message: str, *, path: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        #: The file or folder concerned, when there is one.
        self.path = None if path is None else Path(path)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UsageError(NapariUnetError, ValueError):
    """Options or arguments that cannot work together (exit code 2)."""

    exit_code = 2


class InputError(NapariUnetError, ValueError):
    """An input image, label image or file that cannot be used (exit code 3)."""

    exit_code = 3


class OutputError(NapariUnetError, OSError):
    """An output that cannot or must not be written (exit code 4).

    Raised for outputs that would replace an input, lie outside the output
    folder, sit behind a symbolic link, and for every ``OSError`` met while
    writing (disk full, read-only file system, permission denied).
    """

    exit_code = 4


class OutputExistsError(OutputError, FileExistsError):
    """An output exists and overwriting was not asked for (exit code 4)."""


class DataWarning(UserWarning):
    """Training data that trains, but probably not what the user meant."""


class RedundantComputeWarning(UserWarning):
    """Tiles or chunks so small that the halo around them dominates the compute."""


def exit_code(error: BaseException) -> int:
    """The command-line exit status for an exception.

    Examples
    --------
    >>> exit_code(InputError("x")), exit_code(KeyboardInterrupt()), exit_code(OSError())
    (3, 130, 4)
    """
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, NapariUnetError):
        return error.exit_code
    if isinstance(error, OSError):
        return OutputError.exit_code
    return 1


_FIXES = {
    errno.ENOSPC: "the disk is full; free some space or choose another output folder",
    errno.EDQUOT: "the disk quota is exceeded; free some space or choose another output folder",
    errno.EROFS: "the file system is read-only; choose another output folder",
    errno.EACCES: "permission denied; choose a folder you can write to, or change its permissions",
    errno.EPERM: "operation not permitted; choose a folder you can write to",
    errno.ENOENT: "the folder does not exist; create it first",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another output path",
    errno.EISDIR: "it is a folder; give a file name",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter one",
}


def output_error(err: OSError, path: str | os.PathLike, what: str = "write") -> OutputError:
    """Turn an ``OSError`` met while writing ``path`` into an :class:`OutputError`.

    The message names the file, the cause and the fix, e.g. ``cannot write
    out/a.tif: the disk is full; free some space or choose another output
    folder``.
    """
    if isinstance(err, OutputError):
        return err
    reason = _FIXES.get(err.errno or -1, err.strerror or str(err) or type(err).__name__)
    new = OutputError(f"cannot {what} {path}: {reason}", path=path)
    new.errno = err.errno
    return new
