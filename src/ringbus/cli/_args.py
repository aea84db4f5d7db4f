"""What every command's options share: a parser whose usage errors are one
line, and argument types that refuse bad values before any work starts."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

__all__ = [
    "CommandParser",
    "hex_hash",
    "new_file",
    "non_negative_float",
    "non_negative_int",
    "port",
    "positive_int",
    "stdout_closed",
]


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line and exit status 2.

    The line names the command and the problem and points at ``--help``;
    argparse's usage dump is left to ``--help``.
    """

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see 'PROG --help')`` and exit with 2."""
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def non_negative_int(text: str) -> int:
    """An integer ``>= 0``."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer ``>= 1``."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number ``>= 0``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def port(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {value}")
    return value


def hex_hash(text: str) -> str:
    """A SHA-256 digest as 64 lowercase hex digits."""
    if len(text) != 64 or any(char not in "0123456789abcdef" for char in text):
        raise argparse.ArgumentTypeError("a chain head is 64 lowercase hex digits")
    return text


def new_file(text: str) -> Path:
    """A file that can be written: its folder exists and is writable.

    Checked when the command line is read, so a long run does not end in an
    error about where its result was to go.
    """
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory")
    folder = path.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{text} is not writable")
    return path


def stdout_closed() -> int:
    """Silence stdout after its reader went away (``ringbus demo | head``).

    Returns the exit status of a process ended by ``SIGPIPE`` (141), as the
    shell would report it, without a traceback on stderr.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141
