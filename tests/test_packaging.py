"""Packaging: pyproject.toml + setup.py build a wheel with the license, the typing marker and the
lmms-eval entry point, and building leaves the checkout clean; LICENSE, CITATION.cff and
CHANGELOG.md are there and well-formed."""
import subprocess
import sys
import zipfile

from docs_blocks import ROOT


def tracked_files():
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        return [p for p in out.stdout.splitlines() if not p.startswith("tests/fixtures/") and (ROOT / p).is_file()]
    # not a git checkout (an unpacked sdist): everything but the environments
    return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()
            and not any(part.startswith(".venv") or part in ("__pycache__", ".git") for part in p.relative_to(ROOT).parts)
            and not str(p.relative_to(ROOT)).startswith("tests/fixtures/")]


def test_building_leaves_the_checkout_clean_and_the_wheel_is_complete(tmp_path):
    checkout = tmp_path / "checkout"
    for rel in tracked_files():
        dest = checkout / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((ROOT / rel).read_bytes())
    before = sorted(p.relative_to(checkout) for p in checkout.rglob("*"))
    # the build backend (setuptools) from this environment, offline: what `make` installs with
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", ".", "-w", str(tmp_path / "dist")],
                          cwd=checkout, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = sorted(p.relative_to(checkout) for p in checkout.rglob("*"))
    assert after == before, f"the build left {sorted(set(after) - set(before))}"
    (wheel,) = (tmp_path / "dist").glob("token_compressor-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(info).decode()
        entry_points = z.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert "token_compressor/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata and "Requires-Dist: transformers" in metadata
    assert "token_compressor = token_compressor.runtime:lmms_eval_plugin" in entry_points
    assert "token-compressor = token_compressor.cli:main" in entry_points
    assert not any(n.startswith(("tests/", "examples/", "benchmarks/")) for n in names)


def test_license_citation_and_changelog():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    import yaml

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "Apache-2.0"
    from token_compressor import __version__

    assert cff["version"] == __version__
    papers = {ref["url"] for ref in cff["references"]}
    readme = (ROOT / "README.md").read_text()
    # every paper the README's methods table links is cited
    import re

    assert set(re.findall(r"\((https://arxiv\.org/abs/[0-9.]+)\)", readme)) <= papers
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")
