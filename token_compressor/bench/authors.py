"""The VidCom² authors' own functions, loaded at run time from a local checkout of their repository,
so that the selection and scaling tables time them beside ours in the same run.

Their repository is `xuyang-liu16/VidCom2`, branch `qwen`, commit a85d485 (the one our golden data
and shared/notes/baselines.md describe). Nothing of it is copied into this project: the user gives
the path of a checkout (`--authors-repo PATH` or `TOKEN_COMPRESSOR_AUTHORS_REPO=PATH`) and this
module imports their files from there:

    vidcom2    token_compressor/vidcom2/vidcom2.py: `select_low_var_channels`, `compute_gaussian_scores`,
               `compute_scales`, `select_outlier_indices`, `_map_linear_offset`, called in the order of
               their Qwen patch's `_compute_keep_indices` (vidcom2/models/qwen2_5_vl.py)
    dycoke, visionzip, fastvid, holitom
               token_compressor/<method>/core.py: `compress_features(x [T*N, D], grid_thw, 2, ratio)`,
               the entry point their Qwen patches call, with grid (T, 2, 2N) (they use only T and
               h*w/4 = N)

Their package is also named `token_compressor`, so it is imported under a private alias
(`_tc_authors_<hash of the path>`) whose search path is their `token_compressor/` folder, without
running that folder's `__init__.py`. Only the algorithm modules are imported: they need nothing but
torch. Their `models/` modules (transformers 4.57 `forward` copies that do not import on 5.x) are
never touched, which is why VidCom²'s short keep-index sequence is called here instead of importing
`_compute_keep_indices` from them. A missing path, a missing file, a file that fails to import or
lacks a function raises `AuthorsRepoError` naming the path and what is wrong.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
import types
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch

ENV = "TOKEN_COMPRESSOR_AUTHORS_REPO"
COMMIT = "a85d485cc2205e92705b32e618b3bc7a492836f9"
METHODS = ("vidcom2", "dycoke", "visionzip", "fastvid", "holitom")
# method -> (module inside their token_compressor/, the functions this module calls)
FILES = {
    "vidcom2": ("vidcom2.vidcom2", ("select_low_var_channels", "compute_gaussian_scores", "compute_scales",
                                    "select_outlier_indices", "_map_linear_offset")),
    **{m: (f"{m}.core", ("compress_features",)) for m in ("dycoke", "visionzip", "fastvid", "holitom")},
}


class AuthorsRepoError(RuntimeError):
    """The authors' checkout cannot be used (the message names the path and the problem)."""


@dataclass
class AuthorsCode:
    """functions: method -> fn(x [T*N, D], T, ratio) -> (keep int64 [K] ascending, features [K, D] or None),
    each calling the authors' own code on `x` as their Qwen patch does."""

    path: str
    commit: str
    functions: Dict[str, Callable[[torch.Tensor, int, float], Tuple[torch.Tensor, Optional[torch.Tensor]]]] = \
        field(default_factory=dict)

    @property
    def label(self) -> str:
        known = not self.commit.startswith("unknown")
        return f"authors' code @ {self.commit[:7]}" if known else "authors' code (commit unknown)"

    def describe(self) -> str:
        note = "" if self.commit == COMMIT else f" (the project's golden data and notes describe {COMMIT[:7]})"
        return f"the authors' functions loaded from {self.path} at commit {self.commit}{note}"


def load_or_exit(arg: Optional[str] = None) -> Optional[AuthorsCode]:
    """For the benchmarks' command lines: the authors' code from `arg` or the environment (None when
    neither is given); a checkout that cannot be used ends the run with its error message."""
    path = resolve_path(arg)
    if not path:
        return None
    try:
        return load(path)
    except AuthorsRepoError as e:
        raise SystemExit(f"error: {e}") from None


def resolve_path(arg: Optional[str] = None) -> Optional[str]:
    """The checkout to use: `arg` (a command-line option) if given, else the environment variable."""
    if arg:
        return arg
    from ..config import authors_repo_from_env

    return authors_repo_from_env()


def _commit(path: str) -> str:
    try:
        out = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown (not a git checkout)"


def _import(alias: str, path: str, dotted: str, names) -> types.ModuleType:
    source = os.path.join(path, "token_compressor", *dotted.split(".")) + ".py"
    if not os.path.isfile(source):
        raise AuthorsRepoError(f"{ENV} / --authors-repo: {path} has no token_compressor/{dotted.replace('.', '/')}.py; "
                               f"expected a checkout of xuyang-liu16/VidCom2 at {COMMIT[:7]} (branch qwen)")
    with open(source) as f:
        text = f.read()
    if "from token_compressor" in text or "import token_compressor" in text:
        raise AuthorsRepoError(f"{source} imports `token_compressor` by its absolute name, which would load this "
                               "project instead of the authors' package; only relative imports can be loaded")
    try:
        module = importlib.import_module(f"{alias}.{dotted}")
    except Exception as e:  # their code failing to import: say which file and why
        raise AuthorsRepoError(f"importing the authors' {source} failed: {type(e).__name__}: {e}") from e
    missing = [n for n in names if not callable(getattr(module, n, None))]
    if missing:
        raise AuthorsRepoError(f"the authors' {source} has no function {', '.join(missing)}")
    return module


def _vidcom2(m):
    def keep(x: torch.Tensor, T: int, ratio: float):
        N = x.shape[0] // T
        sel = m.select_low_var_channels(x)
        vid, frame = m.compute_gaussian_scores(sel, N)
        scales = m.compute_scales(-vid.mean(dim=-1), ratio)
        return m._map_linear_offset(m.select_outlier_indices(vid + frame, scales, N), N), None

    return keep


def _core(m):
    def compress(x: torch.Tensor, T: int, ratio: float):
        N = x.shape[0] // T
        features, keep = m.compress_features(x, torch.tensor([T, 2, 2 * N]), 2, ratio)
        return keep, features

    return compress


def load(path: str, methods=METHODS) -> AuthorsCode:
    """The authors' functions of `methods` from the checkout at `path` (see the module docstring)."""
    if not path or not os.path.isdir(path):
        raise AuthorsRepoError(f"{ENV} / --authors-repo: {path!r} is not a directory; expected a checkout of "
                               f"xuyang-liu16/VidCom2 at {COMMIT[:7]} (branch qwen)")
    path = os.path.abspath(path)
    package_dir = os.path.join(path, "token_compressor")
    if not os.path.isdir(package_dir):
        raise AuthorsRepoError(f"{ENV} / --authors-repo: {path} has no token_compressor/ folder; expected a checkout "
                               f"of xuyang-liu16/VidCom2 at {COMMIT[:7]} (branch qwen)")
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"no authors' function for {sorted(unknown)}; known: {list(METHODS)}")
    alias = "_tc_authors_" + hashlib.sha1(path.encode()).hexdigest()[:12]
    if alias not in sys.modules:  # their package, without running its __init__.py
        package = types.ModuleType(alias, f"the authors' token_compressor package from {package_dir}")
        package.__path__ = [package_dir]
        package.__package__ = alias
        sys.modules[alias] = package
    code = AuthorsCode(path, _commit(path))
    for method in methods:
        dotted, names = FILES[method]
        module = _import(alias, path, dotted, names)
        code.functions[method] = _vidcom2(module) if method == "vidcom2" else _core(module)
    return code
