"""The `token-compressor` command.

Each subcommand lives in its own module that exposes `register(subparsers)`; this file only
collects them, so adding a command never edits another command's code.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# modules with `register(subparsers)`; each adds one or more subcommands
COMMAND_MODULES = [
    "token_compressor.commands.info",
    "token_compressor.commands.run",
    "token_compressor.commands.bench",
    "token_compressor.commands.visualize",
    "token_compressor.commands.screen",
]


class CommandError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="token-compressor", description="Visual token compression for Qwen video LLMs.")
    parser.add_argument("--version", action="version", version=f"token-compressor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CommandError, ValueError, OSError) as e:  # bad input (OSError: unreadable/unwritable files)
        print(f"token-compressor {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
