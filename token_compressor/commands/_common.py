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


OPTION_HELP = ("a compressor option KEY=VALUE, repeatable (e.g. --option k=0.6 for dycoke, --option seed=1 "
               "for random). The method's own variables are read too, as in lmms-eval (DYCOKE_K, HOLITOM_T, "
               "fastvid_DySeg_c, ...: docs/methods.md); --option wins")


def add_option_arguments(parser) -> None:
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help=OPTION_HELP)


def compressor_options(method: str, assignments) -> dict:
    """The options for `method`: its variables from the environment, then `--option` pairs over
    them; validated (one line naming the option on a bad value or an option it does not take)."""
    from ..config import method_options_from_env, parse_option_assignments
    from ..registry import check_options

    try:
        options = {**method_options_from_env(method), **parse_option_assignments(method, assignments)}
        if options and method != "none":
            check_options(method, options)
        elif options:
            raise ConfigError(f"compressor 'none' takes no options; got {', '.join(sorted(options))}")
    except (ConfigError, ValueError) as e:
        raise command_error(str(e)) from None
    return options


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
