"""Every environment variable token-compressor reads, read and validated here and nowhere else.

| variable                  | accepted                                   | default |
|---------------------------|--------------------------------------------|---------|
| `COMPRESSOR`              | a registered compressor name, or `none`    | unset (off) |
| `R_RATIO`                 | a number in (0, 1]                         | 0.25    |
| `TOKEN_COMPRESSOR_KERNELS`| `auto`, `triton` or `torch`                | `auto`  |

`Config.from_env()` returns one immutable, validated `Config`; a bad value raises `ConfigError`
naming the variable, the value and what is accepted.

`TRITON_INTERPRET` is Triton's own variable (`1`: kernels run on CPU tensors in its interpreter);
it is read here only to decide whether the Triton backend may score CPU tensors.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Mapping, Optional

DEFAULT_RATIO = 0.25
KERNEL_BACKENDS = ("auto", "triton", "torch")


class ConfigError(ValueError):
    """A configuration value (environment variable or argument) is invalid."""


def parse_ratio(value, source: str = "ratio") -> float:
    """Validate a retention ratio: a finite number in (0, 1]. `source` names it in errors."""
    if isinstance(value, bool):
        raise ConfigError(f"{source}={value!r} is not a number; expected a number in (0, 1]")
    shown = value.strip() if isinstance(value, str) else value
    try:
        ratio = float(shown)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}={shown!r} is not a number; expected a number in (0, 1], e.g. 0.25") from None
    if not math.isfinite(ratio) or not 0.0 < ratio <= 1.0:
        raise ConfigError(f"{source}={shown!r} is out of range; expected a number in (0, 1]")
    return ratio


def parse_compressor(value: Optional[str], source: str = "method") -> Optional[str]:
    """Validate a compressor name against the registry. `None`/empty means off; `none` is kept
    as the explicit keep-everything compressor."""
    if value is None:
        return None
    from .registry import available_compressors  # the registry is the one list of names

    name = str(value).strip().lower()
    if name == "":
        return None
    names = available_compressors()
    if name not in names:
        raise ConfigError(
            f"{source}={value!r} is not a known compressor; expected one of: {', '.join(names)}"
        )
    return name


def parse_kernels(value: Optional[str], source: str = "TOKEN_COMPRESSOR_KERNELS") -> str:
    if value is None or str(value).strip() == "":
        return "auto"
    name = str(value).strip().lower()
    if name not in KERNEL_BACKENDS:
        raise ConfigError(
            f"{source}={value!r} is not a kernel backend; expected one of: {', '.join(KERNEL_BACKENDS)}"
        )
    return name


def kernel_backend_from_env(environ: Optional[Mapping[str, str]] = None) -> str:
    """The scoring backend asked for by `TOKEN_COMPRESSOR_KERNELS`: `auto` (default), `triton`
    or `torch`. Read on every call, so the kernel dispatch follows the current environment."""
    env = os.environ if environ is None else environ
    return parse_kernels(env.get("TOKEN_COMPRESSOR_KERNELS"))


def triton_interpret_from_env(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when `TRITON_INTERPRET` is set to a true value, as Triton itself reads it
    (`1`, `y`, `yes`, `on`, `true`, any case)."""
    env = os.environ if environ is None else environ
    return str(env.get("TRITON_INTERPRET", "")).strip().lower() in ("1", "y", "yes", "on", "true")


@dataclass(frozen=True)
class Config:
    """The validated configuration. `compressor is None` means compression is off."""

    compressor: Optional[str] = None
    ratio: float = DEFAULT_RATIO
    kernels: str = "auto"

    @property
    def enabled(self) -> bool:
        """True when a compressor other than `none` is selected."""
        return self.compressor not in (None, "none")

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Config":
        env = os.environ if environ is None else environ
        ratio_text = env.get("R_RATIO")
        ratio = DEFAULT_RATIO if ratio_text in (None, "") else parse_ratio(ratio_text, "R_RATIO")
        return cls(
            compressor=parse_compressor(env.get("COMPRESSOR"), "COMPRESSOR"),
            ratio=ratio,
            kernels=parse_kernels(env.get("TOKEN_COMPRESSOR_KERNELS")),
        )


def from_env(environ: Optional[Mapping[str, str]] = None) -> Config:
    """Read and validate the configuration from `environ` (default: `os.environ`)."""
    return Config.from_env(environ)
