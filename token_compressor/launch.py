"""Run a Python program with token-compressor turned on from the environment.

    python -m token_compressor.launch -m lmms_eval --model qwen2_5_vl ...
    accelerate launch -m token_compressor.launch -m lmms_eval --model qwen2_5_vl ...
    python -m token_compressor.launch my_script.py ARGS...
    python -m token_compressor.launch lmms-eval ARGS...      (a console script on PATH)

For lmms-eval versions without entry points and for any other program. The configuration
(COMPRESSOR, R_RATIO, EMC_*, TOKEN_COMPRESSOR_*) is validated before the program starts: an
invalid value prints one line and exits with status 2. The program then runs as `__main__`, with
`sys.argv` as it would see it, and the run report is printed when it exits.
"""
from __future__ import annotations

import os
import runpy
import shutil
import sys

USAGE = "usage: python -m token_compressor.launch (-m MODULE | SCRIPT | PROGRAM) [ARGS...]"


def _fail(message: str) -> int:
    sys.stderr.write(f"token_compressor.launch: {message}\n")
    return 2


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() if argv else USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "-m":
        if len(argv) < 2:
            return _fail("-m needs a module name")
        target, rest, as_module = argv[1], argv[2:], True
    else:
        target, rest, as_module = argv[0], argv[1:], False
        if not os.path.isfile(target):
            found = shutil.which(target)
            if found is None:
                return _fail(f"{target!r} is not a file or a program on PATH")
            target = found

    from .config import ConfigError
    from .runtime import install

    try:
        install("launcher")
    except (ConfigError, RuntimeError) as e:
        return _fail(str(e))

    if as_module:
        sys.argv = [target, *rest]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv = [target, *rest]
        runpy.run_path(target, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
