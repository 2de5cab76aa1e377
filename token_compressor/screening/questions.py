"""Replacing the question text of a prompt while leaving appended multiple-choice options alone.

EMC's screener sees only the question; the options (and any post-prompt such as "Answer with the
option's letter") are appended to the rewritten question unchanged.
"""
from __future__ import annotations

import re
from typing import Optional, Tuple

# an option line: "A. text", "A) text", "(A) text", "A: text", "A text" is NOT one (too ambiguous)
_OPTION_LINE = re.compile(r"^[ \t]*(?:\([A-Za-z]\)|[A-Za-z][.):])[ \t]*\S")


def split_options(prompt: str) -> Tuple[str, str]:
    """Split `prompt` into `(stem, rest)` where `rest` starts at the first line that opens a run of
    at least two multiple-choice option lines ("A. ...", "(B) ...", "C) ...", "D: ..."), including
    its leading newline(s). Without such a run, `rest` is "" and `stem` is the whole prompt.
    `stem + rest == prompt` always.
    """
    lines = prompt.splitlines(keepends=True)
    pos = 0
    for i, line in enumerate(lines):
        if i > 0 and _OPTION_LINE.match(line) and i + 1 < len(lines) and _OPTION_LINE.match(lines[i + 1]):
            stem = prompt[:pos]
            cut = len(stem.rstrip("\r\n"))  # newline(s) before the options stay with the options
            return prompt[:cut], prompt[cut:]
        pos += len(line)
    return prompt, ""


def replace_question(prompt: str, new_question: str, original_question: Optional[str] = None) -> str:
    """Return `prompt` with its question replaced by `new_question`; options untouched.

    - With `original_question` found verbatim in `prompt`, exactly one occurrence is replaced (the
      last one before the options), and everything before it (a pre-prompt) and after it stays
      byte-identical.
    - Otherwise the stem before the multiple-choice options (see `split_options`) is replaced.
    - `new_question` None or blank, or equal to the original, returns `prompt` unchanged.
    """
    if new_question is None or not str(new_question).strip():
        return prompt
    new_question = str(new_question).strip()
    stem, rest = split_options(prompt)
    if original_question:
        # the last occurrence before the options: a pre-prompt may repeat words of the question
        at = stem.rfind(original_question)
        if at < 0:
            at = prompt.find(original_question)
        if at >= 0:
            return prompt[:at] + new_question + prompt[at + len(original_question):]
    return new_question + rest


# -- text from a screener is data ----------------------------------------------------------------
# A planner (or a caption model) is a remote, untrusted text source, and what it writes ends up
# inside the video model's chat template. Qwen-VL's special tokens are all spelled `<|name|>`
# (`<|im_start|>`, `<|video_pad|>`, `<|vision_start|>` ...), plus the tag tokens below; one of them
# in a question either makes the processor raise (a `<|video_pad|>` without frames) or opens a new
# chat turn. They are removed, repeatedly (`<|im_<|x|>start|>` must not reassemble), and any `<|`
# or `|>` left over is broken up, so no special token can be spelled by what remains.
_SPECIAL = re.compile(r"<\|[^<>|]{0,80}\|>|</?(?:think|tool_call|tool_response)>", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff]")

MAX_QUESTION_CHARS = 1000   # a rewritten question longer than this (and than 2x the original) is not used
MAX_CAPTION_CHARS = 2000    # captions are cut to this before they enter the planner's conversation


def clean_text(text, max_chars: int, one_line: bool = False) -> str:
    """`text` (any object, stringified) with special tokens and control characters removed,
    whitespace collapsed to single spaces when `one_line`, stripped, and cut to `max_chars`."""
    text = str(text)
    for _ in range(8):
        new = _SPECIAL.sub("", text)
        if new == text:
            break
        text = new
    text = text.replace("<|", "< |").replace("|>", "| >")
    text = _CONTROL.sub(" ", text)
    if one_line:
        text = " ".join(text.split())
    return text.strip()[:max_chars].strip()


def clean_question(question, original: str) -> str:
    """The question to ask the video model, from a screener's `question`: cleaned (`clean_text`,
    one line), and the `original` whenever the result is empty or longer than
    `max(MAX_QUESTION_CHARS, 2 * len(original))` characters (a cut question would be a different
    question)."""
    if question is None:
        return original
    limit = max(MAX_QUESTION_CHARS, 2 * len(original))
    text = clean_text(question, limit + 1, one_line=True)
    return original if not text or len(text) > limit else text
