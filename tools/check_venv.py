"""Check that the running interpreter's environment is exactly a lock file, nothing more or less.

    python tools/check_venv.py requirements/main.lock [--stamp]

Passes when every distribution installed in this environment is named in the lock at the locked
version (besides the tool `pip` and the project itself), and every locked distribution is
installed. With `--stamp` it then records the lock's sha256 in `<venv>/.installed`; without it,
it also refuses a venv whose stamp names another lock content (a venv built before the lock
changed, or changed by hand). Every refusal names the folder to delete. Standard library only: it
runs inside the venv it checks.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import re
import sys

# Present in every venv made by `python -m venv`, and the project itself (installed editable).
NOT_LOCKED = {"pip", "token-compressor"}


def normalize(name: str) -> str:
    """PEP 503 name normalization: `Foo_Bar.baz` -> `foo-bar-baz`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str) -> dict[str, str]:
    """{normalized name: version} from a pip requirements lock (`name==version \\` lines)."""
    pins: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
            if m:
                pins[normalize(m.group(1))] = m.group(2)
    if not pins:
        raise SystemExit(f"error: {path} pins no package: regenerate it with 'make lock'")
    return pins


def installed() -> dict[str, str]:
    """{normalized name: version} of every distribution this interpreter can import from."""
    return {normalize(d.metadata["Name"]): d.version for d in md.distributions()}


def problems(lock: dict[str, str], have: dict[str, str]) -> list[str]:
    out = []
    for name, version in sorted(have.items()):
        if name in NOT_LOCKED:
            continue
        if name not in lock:
            out.append(f"{name}=={version} is installed but not in the lock")
        elif lock[name] != version:
            out.append(f"{name}=={version} is installed, the lock says {lock[name]}")
    out += [f"{name}=={v} is locked but not installed" for name, v in sorted(lock.items())
            if name not in have]
    return out


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    lock_path, stamp = argv[0], "--stamp" in argv[1:]
    if not os.path.isfile(lock_path):
        print(f"error: {lock_path} is missing: run 'make lock' (installs never run unlocked)",
              file=sys.stderr)
        return 2
    venv = os.path.relpath(sys.prefix)
    with open(lock_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    stamp_path = os.path.join(sys.prefix, ".installed")
    if not stamp:
        recorded = open(stamp_path, encoding="utf-8").read().strip() if os.path.exists(stamp_path) else ""
        if recorded != digest:
            print(f"error: the venv {venv} was not built from the current {lock_path}; "
                  f"delete {venv} (rm -rf {venv}) and run make again", file=sys.stderr)
            return 2
    found = problems(read_lock(lock_path), installed())
    if found:
        print(f"error: the venv {venv} does not match {lock_path}:", file=sys.stderr)
        for line in found[:20]:
            print(f"  {line}", file=sys.stderr)
        if len(found) > 20:
            print(f"  ... and {len(found) - 20} more", file=sys.stderr)
        print(f"delete {venv} (rm -rf {venv}) and run make again; to change a version, edit "
              f"requirements/*.in or setup.py and run 'make lock'", file=sys.stderr)
        return 2
    if stamp:
        with open(stamp_path, "w", encoding="utf-8") as f:
            f.write(digest + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
