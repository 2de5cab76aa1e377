"""The locks, setup.py's ranges and the running environment agree (the locked-install contract).

`make test` runs on requirements/main.lock, `make test-oldest` on requirements/oldest.lock (the
Makefile sets TC_LOCK), `make test-latest` without a lock (TC_LOCK=none).
"""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import shutil
import subprocess
import sys

from packaging.requirements import Requirement
from packaging.version import Version

from token_compressor import support

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_LOCK = os.path.join(ROOT, "requirements", "main.lock")
OLDEST_LOCK = os.path.join(ROOT, "requirements", "oldest.lock")
EXTRAS = ("test", "eval", "viz", "screening")  # what the Makefile installs


def _check_venv():
    spec = importlib.util.spec_from_file_location("check_venv", os.path.join(ROOT, "tools", "check_venv.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cv = _check_venv()


def direct_requirements():
    """setup.py's requirements that the Makefile installs (install_requires + EXTRAS), from the
    installed project's metadata (the venv is rebuilt whenever setup.py changes)."""
    out = []
    for line in md.requires("token-compressor") or []:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in EXTRAS):
            out.append(req)
    return out


def _lower_bound(req):
    bounds = [Version(s.version) for s in req.specifier if s.operator in (">=", "==")]
    return max(bounds) if bounds else None


def test_every_direct_requirement_is_locked_inside_its_range():
    main, oldest = cv.read_lock(MAIN_LOCK), cv.read_lock(OLDEST_LOCK)
    reqs = direct_requirements()
    names = {cv.normalize(r.name) for r in reqs}
    assert {"torch", "transformers", "lmms-eval", "filelock", "torchvision", "numpy"} <= names
    for req in reqs:
        name = cv.normalize(req.name)
        for lock_name, lock in (("main", main), ("oldest", oldest)):
            assert name in lock, f"{name} missing from {lock_name}.lock"
            assert req.specifier.contains(lock[name], prereleases=True), (
                f"{lock_name}.lock has {name}=={lock[name]}, outside setup.py's {req}")
        low = _lower_bound(req)
        if low is not None:
            # oldest.lock is resolved lowest-direct: the bottom of each range is what is tested
            assert Version(oldest[name]) == low, f"oldest.lock {name}=={oldest[name]}, range starts at {low}"


def test_support_ranges_are_the_locked_ends():
    main, oldest = cv.read_lock(MAIN_LOCK), cv.read_lock(OLDEST_LOCK)
    assert (oldest["torch"], oldest["transformers"]) == ("2.11.0", "5.17.0")
    for lock in (main, oldest):
        assert support.torch_supported(lock["torch"]) and support.transformers_supported(lock["transformers"])
    # the top of the transformers range is the main lock's release line: the next minor is outside
    t = Version(main["transformers"])
    assert not support.transformers_supported(f"{t.major}.{t.minor + 1}.0")
    # torch: one release line above the main lock's, which `make test-latest` tests without
    # torchvision (none is built for it yet: the main lock keeps the pair torchvision has)
    p = Version(main["torch"])
    assert support.torch_supported(f"{p.major}.{p.minor + 1}.0")
    assert not support.torch_supported(f"{p.major}.{p.minor + 2}.0")
    assert Version(main["torchvision"]).release[:2] == (0, p.minor + 15)  # 0.29 <-> 2.14: the pair
    # the bad filelock for lmms-eval 0.7.x is excluded, with its reason next to it
    assert Version(main["filelock"]) < Version("4.3") and Version(oldest["filelock"]) < Version("4.3")
    assert "filelock._api" in open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()


def test_locks_pin_every_line_with_hashes():
    for path in (MAIN_LOCK, OLDEST_LOCK):
        text = open(path, encoding="utf-8").read()
        pins = cv.read_lock(path)
        assert len(pins) > 100 and text.count("--hash=sha256:") >= len(pins)
        # the build backend of the editable install is locked too (no build isolation)
        assert "setuptools" in pins


def test_running_environment_is_exactly_its_lock():
    which = os.environ.get("TC_LOCK", "requirements/main.lock")
    if which == "none":
        # `make test-latest`: no lock; the environment must still satisfy setup.py's ranges
        for req in direct_requirements():
            version = md.version(req.name)
            assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} outside {req}"
        return
    lock = cv.read_lock(os.path.join(ROOT, which))
    assert cv.problems(lock, cv.installed()) == []
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_problems_names_extra_missing_and_wrong_versions():
    lock = {"a": "1.0", "b": "2.0", "c": "3.0"}
    have = {"a": "1.0", "b": "2.1", "d": "0.1", "pip": "23.2.1", "token-compressor": "0.1"}
    assert cv.problems(lock, have) == [
        "b==2.1 is installed, the lock says 2.0",
        "d==0.1 is installed but not in the lock",
        "c==3.0 is locked but not installed",
    ]
    assert cv.normalize("Foo_Bar.baz") == "foo-bar-baz"


def test_check_venv_refuses_a_stale_venv_and_a_missing_lock(tmp_path, capsys):
    lock = tmp_path / "x.lock"
    lock.write_text("pytest==1.0 \\\n    --hash=sha256:00\n")
    # this interpreter's prefix has no stamp for x.lock: refused, naming the folder to delete
    assert cv.main([str(lock)]) == 2
    err = capsys.readouterr().err
    assert "was not built from the current" in err and "rm -rf" in err
    assert cv.main([str(tmp_path / "missing.lock")]) == 2
    assert "missing.lock is missing: run 'make lock'" in capsys.readouterr().err


def test_make_without_a_lock_is_a_clear_error(tmp_path):
    for name in ("Makefile", "setup.py", "pyproject.toml"):
        shutil.copy(os.path.join(ROOT, name), tmp_path / name)
    r = subprocess.run(["make", "-C", str(tmp_path), "test"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "requirements/main.lock is missing: run 'make lock'" in r.stderr
    assert not (tmp_path / ".venv").exists()  # nothing was installed unlocked


def test_make_test_latest_sees_pypi_as_a_user_does():
    """`make test-latest` must reach the newest torch: this machine kind's pip site configuration
    caps it (a global `constraint` file), so the recipe runs pip with an empty configuration."""
    makefile = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
    recipe = makefile[makefile.index("\ntest-latest:"):]
    recipe = recipe[:recipe.index("\n\n")]
    assert "LATEST_PIP" in recipe and "LATEST_PIP = PIP_CONFIG_FILE=/dev/null" in makefile
    assert "install -q --upgrade -e \".[test]\"" in recipe and "$(CORE_TESTS)" in recipe
