"""Every environment variable token-compressor reads, read and validated here and nowhere else.

| variable                  | accepted                                   | default |
|---------------------------|--------------------------------------------|---------|
| `COMPRESSOR`              | a registered compressor name, or `none`    | unset (off) |
| `R_RATIO`                 | a number in (0, 1]                         | 0.25    |
| `TOKEN_COMPRESSOR_KERNELS`| `auto`, `triton` or `torch`                | `auto`  |
| `TOKEN_COMPRESSOR_REPORT` | `1`/`on`/`true` or `0`/`off`/`false`       | `1` (the run report of lmms-eval runs and the launcher) |
| `TOKEN_COMPRESSOR_ALLOW_UNTESTED` | a switch                           | off: a transformers or torch newer than the tested range is refused (docs/models.md, "Versions") |
| `TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED` | a switch                       | off: with `COMPRESSOR` set, an lmms-eval or launcher run whose model cannot be compressed stops (status 2) |
| the authors' hyperparameters of `dycoke`, `fastvid`, `visionzip`, `holitom` | see `METHOD_OPTIONS` below | the authors' defaults |
| `TOKEN_COMPRESSOR_DYCOKE_KEEP_LAST_FRAME`, `TOKEN_COMPRESSOR_FASTVID_FILL_BUDGET` | a switch | off (the authors' behaviour) |
| `TOKEN_COMPRESSOR_HOLITOM_POSITIONS` | `linspace` or `centres` | `linspace` (the authors') |
| `TOKEN_COMPRESSOR_VLLM_CAPTURE` | a directory: the vLLM plugin writes every video's features and selection there (tests) | unset (off) |
| `TOKEN_COMPRESSOR_AUTHORS_REPO` | a directory: a checkout of the VidCom² authors' repository whose functions the benchmarks time beside ours (`--authors-repo`) | unset: the benchmarks compare with our straightforward formulations |

`Config.from_env()` returns one immutable, validated `Config`; a bad value raises `ConfigError`
naming the variable, the value and what is accepted.

`TRITON_INTERPRET` is Triton's own variable (`1`: kernels run on CPU tensors in its interpreter);
it is read here only to decide whether the Triton backend may score CPU tensors.
"""
from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

DEFAULT_RATIO = 0.25
KERNEL_BACKENDS = ("auto", "triton", "numba", "torch")


class ConfigError(ValueError):
    """A configuration value (environment variable or argument) is invalid."""


def _parse_number(value, source: str, convert, kind: str, expected: str, in_range, example: str = ""):
    """`convert(value)` (strings stripped), checked with `in_range`; a ConfigError naming `source`,
    the value and `expected` otherwise (`kind`: "a number" or "an integer")."""
    shown = value.strip() if isinstance(value, str) else value
    try:
        number = convert(shown)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}={shown!r} is not {kind}; expected {expected}{example}") from None
    if not in_range(number):
        raise ConfigError(f"{source}={shown!r} is out of range; expected {expected}")
    return number


def parse_ratio(value, source: str = "ratio") -> float:
    """Validate a retention ratio: a finite number in (0, 1]. `source` names it in errors."""
    if isinstance(value, bool):
        raise ConfigError(f"{source}={value!r} is not a number; expected a number in (0, 1]")
    return _parse_number(value, source, float, "a number", "a number in (0, 1]",
                         lambda r: math.isfinite(r) and 0.0 < r <= 1.0, ", e.g. 0.25")


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
    """The scoring backend asked for by `TOKEN_COMPRESSOR_KERNELS`: `auto` (default), `triton`,
    `numba` or `torch`. Read on every call, so the kernel dispatch follows the current environment."""
    env = os.environ if environ is None else environ
    return parse_kernels(env.get("TOKEN_COMPRESSOR_KERNELS"))


def triton_interpret_from_env(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when `TRITON_INTERPRET` is set to a true value, as Triton itself reads it
    (`1`, `y`, `yes`, `on`, `true`, any case)."""
    env = os.environ if environ is None else environ
    return str(env.get("TRITON_INTERPRET", "")).strip().lower() in ("1", "y", "yes", "on", "true")


_TRUE = ("1", "on", "true", "yes")
_FALSE = ("0", "off", "false", "no")


def parse_switch(value, source: str, default: bool) -> bool:
    """An on/off variable: `1`/`on`/`true`/`yes` or `0`/`off`/`false`/`no` (any case)."""
    if value is None or str(value).strip() == "":
        return default
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{source}={value!r} is not a switch; expected one of: {', '.join(_TRUE + _FALSE)}")


def parse_flag(value, source: str) -> bool:
    """A Python keyword that is a yes/no choice: `True` or `False` only. A string is an error, not
    its truthiness (`compress_images="no"` would otherwise mean yes)."""
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{source}={value!r} is a {type(value).__name__}; expected True or False")


def report_from_env(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether lmms-eval runs and the launcher measure and print the run report
    (`TOKEN_COMPRESSOR_REPORT`). Default: on when `COMPRESSOR` or `EMC_SCREENER` asks for work
    (anything but unset, empty or `none`), off otherwise, so that a run that asked for nothing
    is left alone (no patch, no table, no file); `TOKEN_COMPRESSOR_REPORT=1` measures a baseline."""
    env = os.environ if environ is None else environ
    asked = any(str(env.get(k) or "").strip().lower() not in ("", "none") for k in ("COMPRESSOR", "EMC_SCREENER"))
    return parse_switch(env.get("TOKEN_COMPRESSOR_REPORT"), "TOKEN_COMPRESSOR_REPORT", asked)


def allow_untested_from_env(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether a transformers/torch release NEWER than the tested ranges may run anyway
    (`TOKEN_COMPRESSOR_ALLOW_UNTESTED`, default off; a loud WARNING says so when used)."""
    env = os.environ if environ is None else environ
    return parse_switch(env.get("TOKEN_COMPRESSOR_ALLOW_UNTESTED"), "TOKEN_COMPRESSOR_ALLOW_UNTESTED", False)


def allow_uncompressed_from_env(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether a run with `COMPRESSOR` set may go on, uncompressed, with a model token-compressor
    cannot compress (`TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED`, default off: the run stops before the
    first sample; when on, a WARNING says so and the run report counts it)."""
    env = os.environ if environ is None else environ
    return parse_switch(env.get("TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED"), "TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED", False)


# ---------------------------------------------------------------------------------------------
# The VidCom² authors' hyperparameter variables of their four Qwen baselines (xuyang-liu16/VidCom2,
# branch qwen), with the same names, so their command lines reproduce unchanged. Each maps to a
# keyword option of the compressor; an unset variable leaves the compressor's default (the
# authors'). Only the selected compressor's variables are read (and validated).
# ---------------------------------------------------------------------------------------------

def _number_in(lo: float, hi: float, lo_open: bool = False):
    expected = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}]"

    def parse(value, source: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
            raise ConfigError(f"{source}={value!r} is not a number; expected {expected}")
        return _parse_number(value, source, float, "a number", expected,
                             lambda x: math.isfinite(x) and (lo < x if lo_open else lo <= x) and x <= hi)
    parse.expected = expected
    return parse


# The largest integer option: compressors use their integer options in int64 tensor arithmetic
# (fastvid_DTM_p=1e23 raised OverflowError in every selection), and no video has 2**31 frames or
# tokens per frame, so every larger value would act as this one.
MAX_INTEGER_OPTION = 2**31 - 1


def _integer_at_least(lo: int, also=()):
    extra = "".join(f" or {a}" for a in also)
    expected = f"an integer >= {lo}{extra}, at most {MAX_INTEGER_OPTION}"

    def parse(value, source: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (numbers.Integral, str)):
            raise ConfigError(f"{source}={value!r} is not an integer; expected {expected}")
        return _parse_number(value, source, int, "an integer", expected,
                             lambda n: lo <= n <= MAX_INTEGER_OPTION or n in also)
    parse.expected = expected
    return parse


def _switch_option():
    expected = f"one of: {', '.join(_TRUE + _FALSE)}"

    def parse(value, source: str) -> bool:
        if isinstance(value, bool):
            return value
        if str(value).strip() == "":  # parse_switch would read it as "unset"; an option is set
            raise ConfigError(f"{source}={value!r} is not a switch; expected {expected}")
        return parse_switch(value, source, False)
    parse.expected = expected
    return parse


def _choice_option(choices):
    expected = f"one of: {', '.join(choices)}"

    def parse(value, source: str) -> str:
        text = str(value).strip().lower()
        if isinstance(value, str) and text in choices:
            return text
        raise ConfigError(f"{source}={value!r} is not accepted; expected {expected}")
    parse.expected = expected
    return parse


# method -> ((environment variable, option name, parser), ...). The authors' variables first;
# the TOKEN_COMPRESSOR_* ones are ours: the corrected behaviours of the authors' quirks
# (README, "The authors' quirks"), off by default, so that lmms-eval runs can reach them too.
METHOD_OPTIONS = {
    "dycoke": (
        ("DYCOKE_K", "k", _number_in(0.0, 1.0)),  # merging ratio; default 1 - R_RATIO
        ("DYCOKE_NUM_TOKENS_PER_FRAME", "num_tokens_per_frame", _integer_at_least(1, also=(-1,))),
        ("TOKEN_COMPRESSOR_DYCOKE_KEEP_LAST_FRAME", "keep_last_frame", _switch_option()),
    ),
    "fastvid": (
        ("fastvid_retention_ratio", "retention_ratio", _number_in(0.0, 1.0, lo_open=True)),  # default R_RATIO
        ("fastvid_DySeg_c", "dyseg_c", _integer_at_least(1)),
        ("fastvid_DySeg_tau", "dyseg_tau", _number_in(-1.0, 1.0)),
        ("fastvid_DySeg_ignore", "dyseg_ignore", _number_in(-1.0, 1.0)),
        ("fastvid_STPrune_d", "stprune_d", _number_in(0.0, 1.0)),
        ("fastvid_DTM_p", "dtm_p", _integer_at_least(1)),
        ("fastvid_DTM_beta", "dtm_beta", _number_in(0.0, 1.0)),
        ("TOKEN_COMPRESSOR_FASTVID_FILL_BUDGET", "fill_budget", _switch_option()),
    ),
    "visionzip": (
        ("visionzip_dominant_ratio", "dominant_ratio", _number_in(0.0, 1.0)),
        ("visionzip_k_neighbors", "k_neighbors", _integer_at_least(1)),
    ),
    "holitom": (
        ("HOLITOM_T", "t", _number_in(-1.0, 1.0)),
        ("HOLITOM_BETA", "beta", _number_in(0.0, 1.0)),
        ("HOLITOM_D", "d", _number_in(0.0, 1.0)),
        ("HOLITOM_K", "k", _integer_at_least(1)),
        ("HOLITOM_MAX_WINDOW_SIZE", "max_window_size", _integer_at_least(1)),
        ("TOKEN_COMPRESSOR_HOLITOM_POSITIONS", "positions", _choice_option(("linspace", "centres"))),
    ),
}


def parse_method_option(method: str, option: str, value):
    """Validate one keyword option of a built-in method with the same rule as its environment
    variable (the error names `option`). Unknown methods/options are returned unchanged."""
    for _, name, parse in METHOD_OPTIONS.get(method, ()):
        if name == option:
            return parse(value, option)
    return value


def _literal(text: str):
    """A command-line value: an int, a float, a switch word, or the text itself."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return text


def parse_option_assignments(method: str, assignments, source: str = "--option") -> dict:
    """`KEY=VALUE` strings (the command line's `--option`) -> validated keyword options of
    `method`: a built-in method's options by the rule of their variable (`k=2` for dycoke is out
    of range like `DYCOKE_K=2`), any other value as an int, float, switch or string. The
    compressor's signature is checked later, by `registry.check_options`."""
    out = {}
    for item in assignments or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"{source} {item!r} is not KEY=VALUE (e.g. {source} k=0.6)")
        known = {name for _, name, _ in METHOD_OPTIONS.get(method, ())}
        out[key] = (parse_method_option(method, key, value.strip()) if key in known else _literal(value.strip()))
    return out


def check_method_options(method: str, options: Mapping) -> dict:
    """`options` with every known option of `method` validated (ValueError naming it)."""
    try:
        return {k: (v if v is None else parse_method_option(method, k, v)) for k, v in options.items()}
    except ConfigError as e:
        raise ConfigError(f"{method}: {e}") from None


def method_options_from_env(method: Optional[str], environ: Optional[Mapping[str, str]] = None) -> dict:
    """option -> validated value, for the variables of `method` that are set (non-empty)."""
    env = os.environ if environ is None else environ
    out = {}
    for var, option, parse in METHOD_OPTIONS.get(method or "", ()):
        value = env.get(var)
        if value is not None and str(value).strip() != "":
            out[option] = parse(value, var)
    return out


@dataclass(frozen=True)
class Config:
    """The validated configuration. `compressor is None` means compression is off. `options`:
    the selected compressor's keyword options from its authors' variables, as sorted pairs."""

    compressor: Optional[str] = None
    ratio: float = DEFAULT_RATIO
    kernels: str = "auto"
    options: Tuple[Tuple[str, Any], ...] = ()

    @property
    def enabled(self) -> bool:
        """True when a compressor other than `none` is selected."""
        return self.compressor not in (None, "none")

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Config":
        env = os.environ if environ is None else environ
        ratio_text = env.get("R_RATIO")
        ratio = DEFAULT_RATIO if ratio_text in (None, "") else parse_ratio(ratio_text, "R_RATIO")
        compressor = parse_compressor(env.get("COMPRESSOR"), "COMPRESSOR")
        return cls(
            compressor=compressor,
            ratio=ratio,
            kernels=parse_kernels(env.get("TOKEN_COMPRESSOR_KERNELS")),
            options=tuple(sorted(method_options_from_env(compressor, env).items())),
        )


def vllm_capture_dir_from_env(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """`TOKEN_COMPRESSOR_VLLM_CAPTURE`: an existing directory where the vLLM plugin saves, in the
    worker, each video's features and what was kept (for exactness tests); None when unset."""
    env = os.environ if environ is None else environ
    value = env.get("TOKEN_COMPRESSOR_VLLM_CAPTURE")
    if value is None or value.strip() == "":
        return None
    if not os.path.isdir(value):
        raise ConfigError(f"TOKEN_COMPRESSOR_VLLM_CAPTURE={value!r} is not a directory; expected an existing "
                          "directory to write captures into")
    return os.path.abspath(value)


def authors_repo_from_env(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """`TOKEN_COMPRESSOR_AUTHORS_REPO`: the path of a checkout of the VidCom² authors' repository
    for the benchmarks (checked when it is loaded, `bench/authors.py`); None when unset or empty."""
    env = os.environ if environ is None else environ
    value = env.get("TOKEN_COMPRESSOR_AUTHORS_REPO")
    if value is None or value.strip() == "":
        return None
    return value


def from_env(environ: Optional[Mapping[str, str]] = None) -> Config:
    """Read and validate the configuration from `environ` (default: `os.environ`)."""
    return Config.from_env(environ)


# ---------------------------------------------------------------------------------------------
# EMC segment screening (token_compressor/screening). Kept in its own block: read by
# `screening_from_env()`, independent of `Config` above.
#
# | variable            | accepted                                        | default |
# |---------------------|-------------------------------------------------|---------|
# | `EMC_SCREENER`      | `none`, `llm` or `self`                         | `none`  |
# | `EMC_BASE_URL`      | an http(s) URL of an OpenAI-compatible API      | `OPENAI_BASE_URL`, else `https://api.openai.com/v1` |
# | `EMC_MODEL`         | the planner model name (required for `llm`)     | unset   |
# | `EMC_CAPTION_MODEL` | the caption model name                          | `EMC_MODEL` |
# | `EMC_CAPTION_BASE_URL` | an http(s) URL for the caption model         | the planner's base URL |
# | `EMC_CACHE_DIR`     | a directory (created when needed)               | `~/.cache/token_compressor/emc` |
# | `EMC_TIMEOUT_S`     | seconds in [0.001, 86400]: one deadline per request (connect, headers, body) | `60`    |
# | `EMC_MAX_RETRIES`   | an integer in [0, 10]                           | `2`     |
# | `OPENAI_API_KEY`    | the API key, sent as a bearer token, never logged | unset (no header) |
# | `EMC_API_KEY`       | the planner endpoint's key (wins over `OPENAI_API_KEY`) | `OPENAI_API_KEY` |
# | `EMC_CAPTION_API_KEY` | the key for `EMC_CAPTION_BASE_URL` (another host never gets the planner's key) | unset (no header) |
#
# `OPENAI_BASE_URL` belongs to other tools too: it is only validated when the `llm` screener uses it.
# ---------------------------------------------------------------------------------------------

from dataclasses import field as _field  # noqa: E402  (kept inside this block to ease merges)

SCREENERS = ("none", "llm", "self")
DEFAULT_EMC_BASE_URL = "https://api.openai.com/v1"
DEFAULT_EMC_CACHE_DIR = os.path.join("~", ".cache", "token_compressor", "emc")
DEFAULT_EMC_TIMEOUT_S = 60.0
DEFAULT_EMC_MAX_RETRIES = 2


def parse_screener(value: Optional[str], source: str = "EMC_SCREENER") -> str:
    if value is None or str(value).strip() == "":
        return "none"
    name = str(value).strip().lower()
    if name not in SCREENERS:
        raise ConfigError(f"{source}={value!r} is not a screener; expected one of: {', '.join(SCREENERS)}")
    return name


def _no_userinfo(url: Optional[str]) -> Optional[str]:
    """`url` without a `user:password@` part (for keys, records and messages)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url, flags=re.I) if url else url


def parse_base_url(value: str, source: str = "EMC_BASE_URL") -> str:
    url = str(value).strip()
    if not (url.startswith("http://") or url.startswith("https://")) or len(url) <= len("https://"):
        raise ConfigError(f"{source}={_no_userinfo(str(value))!r} is not a URL; expected an http:// or https:// URL, "
                          "e.g. http://localhost:8000/v1")
    return url.rstrip("/")


# A request deadline is a timer and a socket timeout: both overflow the C time types far below
# float's range (EMC_TIMEOUT_S=1e10 made every request fail), and a day is longer than any
# planner reply is worth waiting for. Below a millisecond no request can complete.
MIN_TIMEOUT_S = 0.001
MAX_TIMEOUT_S = 86400.0


def parse_timeout(value, source: str = "EMC_TIMEOUT_S") -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{source}={value!r} is not a number; expected a number of seconds in "
                          f"[{MIN_TIMEOUT_S:g}, {MAX_TIMEOUT_S:g}]")
    return _parse_number(value, source, float, "a number",
                         f"a number of seconds in [{MIN_TIMEOUT_S:g}, {MAX_TIMEOUT_S:g}]",
                         lambda s: math.isfinite(s) and MIN_TIMEOUT_S <= s <= MAX_TIMEOUT_S)


def parse_max_retries(value, source: str = "EMC_MAX_RETRIES") -> int:
    if isinstance(value, (bool, float)):
        raise ConfigError(f"{source}={value!r} is not an integer; expected an integer in [0, 10]")
    return _parse_number(value, source, int, "an integer", "an integer in [0, 10]", lambda n: 0 <= n <= 10)


@dataclass(frozen=True)
class ScreeningConfig:
    """The validated EMC screening configuration. `screener == "none"` keeps every video whole."""

    screener: str = "none"
    base_url: str = DEFAULT_EMC_BASE_URL
    model: Optional[str] = None
    caption_model: Optional[str] = None
    caption_base_url: Optional[str] = None  # None: the planner's base_url
    cache_dir: str = os.path.abspath(os.path.expanduser(DEFAULT_EMC_CACHE_DIR))
    timeout_s: float = DEFAULT_EMC_TIMEOUT_S
    max_retries: int = DEFAULT_EMC_MAX_RETRIES
    api_key: Optional[str] = _field(default=None, repr=False, compare=False)
    caption_api_key: Optional[str] = _field(default=None, repr=False, compare=False)

    @property
    def caption_key(self) -> Optional[str]:
        """The key sent to the caption endpoint: the planner's when both are the same URL, else
        only `caption_api_key` (the planner's key never goes to a host it was not set for)."""
        if not self.caption_base_url or self.caption_base_url == self.base_url:
            return self.api_key
        return self.caption_api_key

    @property
    def enabled(self) -> bool:
        return self.screener != "none"

    def cache_identity(self) -> dict:
        """What a screening result depends on, for cache keys and records (never the API key,
        nor a password in a URL)."""
        return {"screener": self.screener, "base_url": _no_userinfo(self.base_url), "model": self.model,
                "caption_model": self.caption_model,
                "caption_base_url": _no_userinfo(self.caption_base_url or self.base_url)}

    def __repr__(self) -> str:  # the keys are left out, and URLs lose any user:password
        shown = {**self.__dict__, "base_url": _no_userinfo(self.base_url),
                 "caption_base_url": _no_userinfo(self.caption_base_url)}
        return "ScreeningConfig(" + ", ".join(f"{k}={shown[k]!r}" for k in shown if not k.endswith("api_key")) + ")"

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "ScreeningConfig":
        env = os.environ if environ is None else environ

        def text(name):
            value = env.get(name)
            return None if value is None or value.strip() == "" else value.strip()

        screener = parse_screener(env.get("EMC_SCREENER"))
        if text("EMC_BASE_URL") is not None:
            base_url = parse_base_url(text("EMC_BASE_URL"), "EMC_BASE_URL")
        elif text("OPENAI_BASE_URL") is not None and screener == "llm":
            base_url = parse_base_url(text("OPENAI_BASE_URL"), "OPENAI_BASE_URL")
        else:
            base_url = DEFAULT_EMC_BASE_URL
        model = text("EMC_MODEL")
        if screener == "llm" and model is None:
            raise ConfigError(f"EMC_MODEL={env.get('EMC_MODEL')!r} is not set; EMC_SCREENER='llm' needs "
                              "the planner model name, e.g. EMC_MODEL=gpt-4o")
        caption_model = text("EMC_CAPTION_MODEL") or model
        caption_base_url = (parse_base_url(text("EMC_CAPTION_BASE_URL"), "EMC_CAPTION_BASE_URL")
                            if text("EMC_CAPTION_BASE_URL") else None)
        cache_dir = os.path.abspath(os.path.expanduser(text("EMC_CACHE_DIR") or DEFAULT_EMC_CACHE_DIR))
        timeout = parse_timeout(env["EMC_TIMEOUT_S"]) if text("EMC_TIMEOUT_S") else DEFAULT_EMC_TIMEOUT_S
        retries = parse_max_retries(env["EMC_MAX_RETRIES"]) if text("EMC_MAX_RETRIES") else DEFAULT_EMC_MAX_RETRIES
        return cls(screener=screener, base_url=base_url, model=model, caption_model=caption_model,
                   caption_base_url=caption_base_url, cache_dir=cache_dir, timeout_s=timeout, max_retries=retries,
                   api_key=text("EMC_API_KEY") or text("OPENAI_API_KEY"),
                   caption_api_key=text("EMC_CAPTION_API_KEY"))


def screening_from_env(environ: Optional[Mapping[str, str]] = None) -> ScreeningConfig:
    """Read and validate the EMC screening variables from `environ` (default: `os.environ`)."""
    return ScreeningConfig.from_env(environ)
