"""Opening the files a user names (videos, JSON, cache records) without ever blocking.

A FIFO, a character device such as `/dev/zero` or a socket passes `os.path.exists` and blocks
(or never ends) when opened or read. Every file the library reads is therefore either checked with
`check_regular_file` (`stat` does not open it) before a reader that takes a path (PyAV), or opened
with `open_regular`, which opens with `O_NONBLOCK` (an open of a FIFO returns at once) and checks
the open descriptor, so the file cannot be swapped between the check and the read.
"""
from __future__ import annotations

import os
import stat

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class NotRegularFileError(OSError):
    """The path exists but is not a regular file (a folder, a FIFO, a device, a socket)."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _not_regular(path: str, mode: int, what: str) -> str:
    if stat.S_ISDIR(mode):
        return f"{path} is a folder, expected a {what}"
    return f"{path} is {_kind(mode)}, not a regular file; expected a {what}"


def check_regular_file(path, what: str = "file", error=ValueError) -> str:
    """`path` (as a str) when it names a regular file; otherwise `error` with one line saying what
    it is: missing, a folder, a FIFO, a device ... (never "not found" for a file that exists)."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"no such {what}: {path}") from None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(_not_regular(path, st.st_mode, what))
    return path


def open_regular(path, mode: str = "r", encoding=None, what: str = "file"):
    """`open(path, mode)` for reading (`"r"` or `"rb"`), refusing anything but a regular file with
    `NotRegularFileError` (an OSError). A missing file raises FileNotFoundError as `open` does."""
    if mode not in ("r", "rb"):
        raise ValueError(f"open_regular reads only; mode {mode!r}")
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(_not_regular(os.fspath(path), st.st_mode, what))
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode, encoding=encoding if mode == "r" else None)
    except BaseException:
        os.close(fd)
        raise
