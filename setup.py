"""token-compressor: plug-and-play visual token compression for Qwen video language models."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
    with open(os.path.join(HERE, "token_compressor", "__init__.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def _transformers_range():
    # the one definition lives in token_compressor/support.py
    with open(os.path.join(HERE, "token_compressor", "support.py"), encoding="utf-8") as f:
        return re.search(r'^TRANSFORMERS_RANGE = "([^"]+)"', f.read(), re.M).group(1)


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
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
        "transformers" + _transformers_range(),
        "packaging>=23",
        "tqdm>=4.60",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "hypothesis>=6.100",
        ],
        # `token-compressor visualize` and `bench --retention`: drawing and video decoding
        "viz": [
            "pillow>=10.1",
            "av>=12",
        ],
        "eval": [
            "torchvision",
            "accelerate>=1.0",
            "qwen-vl-utils>=0.0.14",
            "lmms-eval>=0.7",
            "decord>=0.6",
            "av>=12",
        ],
        # EMC segment screening (`token-compressor screen`, EMC_SCREENER=llm): PyAV decodes the
        # frames to caption, Pillow encodes them; the OpenAI-compatible client is the stdlib.
        "screening": ["av>=12", "pillow>=10"],
        # flash-attn needs a CUDA toolchain at build time: install it yourself on a GPU machine.
        "gpu": ["triton>=3.0"],
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
