"""The ``napari-unet`` command line: one small module per command.

Each command module (``train``, ``predict``, ``evaluate``, ``info``,
``export``, ``demo``) has ``add_parser(subparsers)``, which declares its
arguments, and ``run(args)``, an argparse front over one public library
call that Python users can make too. :func:`main` turns every expected
failure into one or two lines on stderr and a distinct exit code:

====  =====================================================================
code  meaning
====  =====================================================================
0     success
1     an unexpected error (a bug: please report it with ``--debug``)
2     usage: options that do not work together (as argparse)
3     input: a file or folder that cannot be used
4     output: an output that cannot or must not be written
130   interrupted (Ctrl-C)
====  =====================================================================

``--debug`` (before or after the command) prints the traceback as well.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from .. import __version__
from ..errors import NapariUnetError
from ._errors import (
    EXIT_ERROR,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OUTPUT,
    EXIT_USAGE,
    CommandError,
)

__all__ = [
    "COMMANDS",
    "EXIT_ERROR",
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_OUTPUT",
    "EXIT_USAGE",
    "CommandError",
    "build_parser",
    "main",
]

#: The commands, in the order ``--help`` lists them (module names in this package).
COMMANDS = ("train", "predict", "evaluate", "info", "export", "demo")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (building it imports no PyTorch)."""
    parser = argparse.ArgumentParser(
        prog="napari-unet",
        description="U-Net and U-Net++ for microscopy: train, predict, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    from . import demo, evaluate, export, info, predict, train

    modules = {"train": train, "predict": predict, "evaluate": evaluate, "info": info}
    modules.update(export=export, demo=demo)
    for name in COMMANDS:
        modules[name].add_parser(subparsers, parents=[common])
    return parser


def _report(command: str, message: str, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc()
    print(f"napari-unet {command}: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command line; returns the exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    previous = warnings.formatwarning
    if not debug:  # warnings as one line each, not file:line and source
        warnings.formatwarning = _one_line_warning
    try:
        return int(args.run(args) or 0)
    except CommandError as err:
        _report(args.command, str(err), debug)
        return err.code
    except NapariUnetError as err:
        _report(args.command, str(err), debug)
        return err.exit_code
    except OSError as err:
        from ..errors import output_error

        _report(args.command, str(output_error(err, err.filename or "?")), debug)
        return EXIT_OUTPUT
    except KeyboardInterrupt:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"napari-unet {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        warnings.formatwarning = previous


def _one_line_warning(message: Warning | str, *args: object, **kwargs: object) -> str:
    return f"napari-unet: warning: {message}\n"
