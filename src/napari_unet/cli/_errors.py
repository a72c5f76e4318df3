"""The command line's error type and exit codes (see :mod:`napari_unet.cli`)."""

from __future__ import annotations

from ..errors import EXIT_INTERRUPTED, InputError, OutputError, UsageError

__all__ = [
    "EXIT_ERROR",
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_OUTPUT",
    "EXIT_USAGE",
    "CommandError",
]

EXIT_ERROR = 1
EXIT_USAGE = UsageError.exit_code
EXIT_INPUT = InputError.exit_code
EXIT_OUTPUT = OutputError.exit_code


class CommandError(Exception):
    """A user-facing error: printed as ``napari-unet CMD: error: MESSAGE``.

    Parameters
    ----------
    message : str
        Names the file or option, the problem and the fix.
    code : int
        The exit code: :data:`EXIT_USAGE`, :data:`EXIT_INPUT` (default) or
        :data:`EXIT_OUTPUT`.
    """

    def __init__(self, message: str, *, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code
