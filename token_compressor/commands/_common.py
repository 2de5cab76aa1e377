"""Helpers shared by the subcommands: argument checks that fail with one clear line, and
progress bars."""
from __future__ import annotations

import importlib.util
import os
import sys

from ..config import ConfigError, parse_compressor, parse_ratio


def command_error(message: str) -> Exception:
    from ..cli import CommandError  # imported late: cli imports the command modules

    return CommandError(message)


def check_ratio(value: str, option: str = "--ratio") -> float:
    try:
        return parse_ratio(value, option)
    except ConfigError as e:
        raise command_error(str(e)) from None


def check_compressor(value: str, option: str = "--compressor") -> str:
    try:
        return parse_compressor(value, option) or "none"
    except ConfigError as e:
        raise command_error(str(e)) from None


def check_positive_int(value: int, option: str, minimum: int = 1) -> int:
    if value < minimum:
        raise command_error(f"{option}={value} is out of range; expected an integer >= {minimum}")
    return value


def check_output(path: str, option: str = "-o") -> str:
    """An image file we can create: its folder exists and it is not a folder itself."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise command_error(f"{option} {path} is a folder; expected an image file name such as kept.png")
    if not os.path.isdir(folder):
        raise command_error(f"{option} {path}: folder {folder} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".png", ".jpg", ".jpeg", ".webp"):
        raise command_error(f"{option} {path}: unsupported image type {ext or '(none)'}; use .png, .jpg or .webp")
    return path


def require(*modules: str, extra: str = "viz") -> None:
    """Fail with an install hint when an optional dependency is missing."""
    names = {"PIL": "Pillow", "av": "PyAV"}
    missing = [names.get(m, m) for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise command_error(f"this command needs {', '.join(missing)}: pip install 'token-compressor[{extra}]'")


def progress(iterable=None, **kwargs):
    """A tqdm bar on stderr, shown only when stderr is a terminal."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None, leave=False, file=sys.stderr, **kwargs)
