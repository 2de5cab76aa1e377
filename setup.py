"""token-compressor: plug-and-play visual token compression for Qwen video language models."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
    with open(os.path.join(HERE, "token_compressor", "__init__.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def _support_floor(name):
    # the one definition of the tested ranges lives in token_compressor/support.py; only their
    # lower ends are install requirements (see install_requires)
    with open(os.path.join(HERE, "token_compressor", "support.py"), encoding="utf-8") as f:
        spec = re.search(r'^%s = "([^"]+)"' % name, f.read(), re.M).group(1)
    (floor,) = [part.strip() for part in spec.split(",") if part.strip().startswith(">=")]
    return floor


def _readme():
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        return f.read()


setup(
    name="token-compressor",
    version=_version(),
    description="Training-free visual token compression (VidCom2 and baselines) for "
    "Qwen2-VL, Qwen2.5-VL and Qwen3-VL in Hugging Face transformers",
    long_description=_readme(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["token_compressor", "token_compressor.*"]),
    # Every lower bound here is what `make test-oldest` installs (requirements/oldest.lock is
    # resolved with lowest-direct); tests check that both locks sit inside these ranges
    # (tests/test_lock.py). torch and transformers have NO upper bound on purpose: installing
    # token-compressor must never silently downgrade a user's transformers or torch. The top of
    # the tested range is checked when a model is patched instead (a clear error naming the way
    # out, or TOKEN_COMPRESSOR_ALLOW_UNTESTED=1; docs/models.md, "Versions").
    install_requires=[
        "torch" + _support_floor("TORCH_RANGE"),
        "numpy>=2.0",
        "transformers" + _support_floor("TRANSFORMERS_RANGE"),
        "packaging>=23",
        "tqdm>=4.66.3",
    ],
    extras_require={
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
    },
    entry_points={
        "console_scripts": ["token-compressor=token_compressor.cli:main"],
        # lmms-eval (>= 0.6) calls this once per process before building any model; it registers
        # no model ids, it patches the transformers Qwen-VL classes from COMPRESSOR / R_RATIO.
        "lmms_eval.models": ["token_compressor=token_compressor.runtime:lmms_eval_plugin"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
