"""JSON from untrusted text, bounded in size and in nesting depth.

`json.loads` recurses once per nesting level: a reply or a file nested a few thousand deep raises
`RecursionError` (not `ValueError`) out of the parser, which no caller expects. `nesting_depth`
measures the depth in one linear pass (strings skipped, escapes honoured) before any parser runs.
"""
from __future__ import annotations

import json
import re

_TOKENS = re.compile(r'[\[\]{}"\\]')


def nesting_depth(text: str) -> int:
    """The deepest `[`/`{` nesting of `text` outside JSON strings, in linear time (unbalanced text
    is measured as far as it goes)."""
    depth = deepest = 0
    in_string, skip_at = False, -1
    for m in _TOKENS.finditer(text):
        j, c = m.start(), m.group()
        if j == skip_at:
            continue
        if in_string:
            if c == "\\":
                skip_at = j + 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


class JSONLimitError(ValueError):
    """Text over a size or nesting limit (a ValueError, as any other JSON error)."""


def loads_bounded(text, max_depth: int, max_chars: int, what: str = "JSON"):
    """`json.loads(text)` after checking its length and nesting depth (JSONLimitError naming
    `what` and the limit otherwise)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    if len(text) > max_chars:
        raise JSONLimitError(f"{what} is {len(text)} characters; the limit is {max_chars}")
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JSONLimitError(f"{what} is nested {depth} levels deep; the limit is {max_depth}")
    return json.loads(text)
