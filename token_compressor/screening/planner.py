"""ReSimplifyIt-simple: one planner LLM in a growing conversation whose only tool is "caption the
frame at second t" (the EMC note in the project's shared notes, `emc.md`).

`plan()` is independent of where the two functions come from:

    chat_fn(messages: list[dict]) -> str    OpenAI-style messages in, assistant text out
    caption_fn(second: int) -> str          a caption of the frame shown at that second

so the `llm` screener backs them with an OpenAI-compatible server and a `self` screener can back
them with the loaded Qwen-VL model.
"""
from __future__ import annotations

import ast
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from ..bounded_json import nesting_depth
from .questions import MAX_CAPTION_CHARS, clean_text
from .segments import normalize_segments

MAX_UNPARSABLE_IN_A_ROW = 10
MAX_MESSAGES = 100
MAX_EXCEPTIONS = 5
NUM_INITIAL_CAPTIONS = 20
# Size caps: a reply longer than MAX_REPLY_CHARS is not parsed (a planner's decision is a few
# hundred characters; max_tokens=1024 keeps a real one under ~5000); an assistant turn is resent
# to the planner at most MAX_TURN_CHARS long (longer ones as the parsed decision, or cut); the
# whole conversation is bounded by MAX_CONVERSATION_BYTES of UTF-8 content.
MAX_REPLY_CHARS = 32_768
MAX_TURN_CHARS = 4_096
MAX_CONVERSATION_BYTES = 512 * 1024
CAPTION_PROMPT = "Describe this image in detail. Include subtitle if present."

STATUSES = ("succeeded", "failed", "max_turns_exceeded", "no_screening_possible")

SYSTEM_PROMPT = """You help a video question-answering model. It will be shown a video and a question.
Your job: choose the SHORTEST sub-clip(s) of the video that still let it answer, and rewrite the
question so that answering the rewritten question while watching ONLY your sub-clip(s) gives the
same answer as answering the original question while watching the whole video. The model will
believe your clip IS the whole video, so remove time qualifiers that your cut already resolves.

Example: for "what did the person do after putting down the dog", keep the video from about the
moment the dog is put down until the end, and ask "what did the person do in this video". If the
person then prepares food, "they prepared food" answers both questions.

You cannot see the video. You can ask for a caption of the frame at any second. Reply with exactly
one JSON object and nothing else, either
  {"decision": "tool", "parameter": <second>}
to get the caption of the frame at that second (e.g. {"decision": "tool", "parameter": 12}), or,
when you are confident,
  {"decision": "end", "timestamps": [[start, end], ...], "revised_question": "<question>"}
with start and end in seconds of the original video, e.g.
  {"decision": "end", "timestamps": [[1.4, 4.8]], "revised_question": "what did the person do in this video"}

Captions of frames at a few seconds, to give you an overview: {captions}
The video runs at {fps} frames per second and lasts {duration} seconds."""

USER_PROMPT = 'Let us begin. The original question is "{question}".'
REPAIR_PROMPT = ('I could not read your reply. Reply with exactly one JSON object: either '
                 '{"decision": "tool", "parameter": <second>} or '
                 '{"decision": "end", "timestamps": [[start, end], ...], "revised_question": "..."}.')


@dataclass
class PlanOutcome:
    segments: List[tuple]           # normalised, seconds of the original video
    question: str
    status: str
    reason: Optional[str] = None    # why the whole video was kept, when it was
    trace: List[dict] = field(default_factory=list)


def initial_seconds(duration: float, count: int = NUM_INITIAL_CAPTIONS) -> List[int]:
    """`count` integer seconds spread uniformly over [0, floor(duration) - 1] (fewer when the
    video is shorter than `count` seconds)."""
    last = max(0, int(math.floor(duration)) - 1)
    if last + 1 <= count:
        return list(range(last + 1))
    return sorted({int(round(k * last / (count - 1))) for k in range(count)})


# --- reply parsing ------------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


_STRUCTURAL = re.compile(r"[{}\"'\\]")
MAX_STARTS = 64           # `{` positions tried as the start of an object
MAX_SCAN_STEPS = 100_000  # structural characters visited over all starts: parsing is O(reply)


def _balanced_objects(text: str):
    """Substrings of `text` that are brace-balanced `{...}` (quote-aware), outermost first.

    Each of the first `MAX_STARTS` `{` is tried as a start with a fresh quote state (prose with an
    apostrophe before the JSON must not swallow it); the scan jumps from one structural character
    to the next (C speed over prose), and all starts together visit at most `MAX_SCAN_STEPS` of
    them, so a crafted reply (64 `{` then megabytes of text, or of quotes) costs linear time."""
    budget = MAX_SCAN_STEPS
    starts = [m.start() for m, _ in zip(re.finditer(r"\{", text), range(MAX_STARTS))]
    for start in starts:
        depth, quote, skip_at = 0, None, -1
        for m in _STRUCTURAL.finditer(text, start):
            budget -= 1
            if budget < 0:
                return
            j, c = m.start(), m.group()
            if j == skip_at:  # the character after a backslash inside a string
                continue
            if quote:
                if c == "\\":
                    skip_at = j + 1
                elif c == quote:
                    quote = None
            elif c in "\"'":
                quote = c
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    yield text[start:j + 1]
                    break


# A decision nests 3 deep ({"timestamps": [[s, e]]}); a reply nested deeper is not a decision,
# and would take the parsers' recursion down with it (a reply 5,000 deep raised RecursionError
# out of plan()).
MAX_REPLY_DEPTH = 16


def _loads_lenient(blob: str):
    if nesting_depth(blob) > MAX_REPLY_DEPTH:
        return None
    try:
        return json.loads(blob)
    except (ValueError, RecursionError):
        pass
    pythonish = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", blob)))
    try:
        return ast.literal_eval(pythonish)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


def _number(x) -> Optional[float]:
    if isinstance(x, bool):
        return None
    if isinstance(x, (list, tuple)) and len(x) == 1:
        x = x[0]
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _validate(obj) -> Optional[dict]:
    if not isinstance(obj, dict):
        return None
    decision = str(obj.get("decision", "")).strip().lower()
    if decision == "tool":
        second = _number(obj.get("parameter"))
        if second is None or second < 0:
            return None
        return {"decision": "tool", "parameter": second}
    if decision == "end":
        stamps = obj.get("timestamps")
        if not isinstance(stamps, (list, tuple)):
            return None
        if len(stamps) == 2 and all(_number(v) is not None and not isinstance(v, (list, tuple)) for v in stamps):
            stamps = [stamps]  # a single flat pair
        pairs = []
        for pair in stamps:
            if isinstance(pair, (list, tuple)) and len(pair) == 2:
                s, e = _number(pair[0]), _number(pair[1])
                if s is not None and e is not None:
                    pairs.append((s, e))
        question = obj.get("revised_question")
        if isinstance(question, (list, tuple)):
            question = next((q for q in question if isinstance(q, str)), None)
        if question is not None and not isinstance(question, str):
            question = str(question)
        return {"decision": "end", "timestamps": pairs, "revised_question": question}
    return None


def parse_reply(text: str) -> Optional[dict]:
    """The planner's decision in `text`, or None when there is none.

    Finds JSON anywhere in the reply: inside code fences or 【...】, with trailing or leading
    prose, with single quotes or Python literals; a reply longer than `MAX_REPLY_CHARS` is not
    parsed (None), and parsing is linear in the reply's length. Returns `{"decision": "tool", "parameter": float}`
    or `{"decision": "end", "timestamps": [(s, e), ...], "revised_question": str | None}`; when a
    reply holds several decisions, the last valid one wins.
    """
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_REPLY_CHARS:
        return None
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text.replace("【", " ").replace("】", " ")]
    found = None
    for chunk in candidates:
        for blob in _balanced_objects(chunk):
            decision = _validate(_loads_lenient(blob))
            if decision is not None:
                found = decision
        if found is not None:
            return found
    return None


# --- the loop -----------------------------------------------------------------------------------

def _full(duration, question, status, reason, trace) -> PlanOutcome:
    return PlanOutcome([(0.0, float(duration))], question, status, reason, trace)


def plan(question: str, duration: float, fps: float, chat_fn: Callable[[List[dict]], str],
         caption_fn: Callable[[int], str], *, max_unparsable: int = MAX_UNPARSABLE_IN_A_ROW,
         max_messages: int = MAX_MESSAGES, max_exceptions: int = MAX_EXCEPTIONS) -> PlanOutcome:
    """Run ReSimplifyIt-simple. Never raises for a failing `chat_fn`/`caption_fn`: after
    `MAX_EXCEPTIONS` exceptions (or one that says it is not retryable) the outcome is the whole
    video with the original question and status `failed`; `MAX_UNPARSABLE_IN_A_ROW` unparsable
    replies give the whole video with status `failed`; more than `MAX_MESSAGES` messages give the
    whole video with status `max_turns_exceeded`, and so does a conversation over
    `MAX_CONVERSATION_BYTES`; an end decision with no usable segment gives the
    whole video and the original question with status `no_screening_possible`. The three limits
    default to the note's 10 / 100 / 5."""
    trace: List[dict] = []
    exceptions = 0
    last_second = max(0, int(math.floor(duration)))

    def note_exception(kind, e, **extra) -> Optional[PlanOutcome]:
        nonlocal exceptions
        exceptions += 1
        trace.append({"call": kind, "ok": False, "error": f"{type(e).__name__}: {e}"[:500], **extra})
        if not getattr(e, "retryable", True):
            return _full(duration, question, "failed", f"{kind} failed and cannot be retried: {e}", trace)
        if exceptions >= max_exceptions:
            return _full(duration, question, "failed", f"{max_exceptions} exceptions; last: {e}", trace)
        return None

    def caption(second: int):
        t0 = time.perf_counter()
        try:
            text = caption_fn(second)
        except Exception as e:
            return None, note_exception("caption", e, second=second)
        trace.append({"call": "caption", "ok": True, "second": second, "ms": round(1000 * (time.perf_counter() - t0), 1)})
        return clean_text(text, MAX_CAPTION_CHARS), None  # a caption is data: no special tokens, bounded

    overview = {}
    for second in initial_seconds(duration):
        text, stop = caption(second)
        if stop:
            return stop
        overview[str(second)] = text if text is not None else "(caption unavailable)"

    system = (SYSTEM_PROMPT.replace("{captions}", json.dumps(overview, ensure_ascii=False))
              .replace("{fps}", f"{fps:.2f}").replace("{duration}", str(int(math.floor(duration)))))
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": USER_PROMPT.replace("{question}", question)}]
    unparsable = 0
    size = sum(len(m["content"].encode("utf-8")) for m in messages)

    def add(role: str, content: str) -> None:
        nonlocal size
        messages.append({"role": role, "content": content})
        size += len(content.encode("utf-8"))

    while True:
        if len(messages) > max_messages:
            return _full(duration, question, "max_turns_exceeded", f"more than {max_messages} messages", trace)
        if size > MAX_CONVERSATION_BYTES:
            return _full(duration, question, "max_turns_exceeded",
                         f"conversation over {MAX_CONVERSATION_BYTES} bytes", trace)
        t0 = time.perf_counter()
        try:
            reply = chat_fn(list(messages))
        except Exception as e:
            stop = note_exception("chat", e)
            if stop:
                return stop
            continue
        reply = reply if isinstance(reply, str) else str(reply)
        decision = parse_reply(reply)
        trace.append({"call": "chat", "ok": True, "ms": round(1000 * (time.perf_counter() - t0), 1),
                      "decision": decision["decision"] if decision else None,
                      **({} if decision else {"reply": reply[:300], "reply_chars": len(reply)})})
        if len(reply) <= MAX_TURN_CHARS:
            add("assistant", reply)
        elif decision is not None:  # resend what was understood, not megabytes of prose
            add("assistant", json.dumps({k: v for k, v in decision.items() if v is not None}))
        else:
            add("assistant", reply[:MAX_TURN_CHARS] + " [reply cut: too long]")
        if decision is None:
            unparsable += 1
            if unparsable >= max_unparsable:
                return _full(duration, question, "failed", f"{max_unparsable} unparsable replies in a row", trace)
            add("user", REPAIR_PROMPT)
            continue
        unparsable = 0
        if decision["decision"] == "tool":
            second = min(last_second, max(0, int(round(decision["parameter"]))))
            text, stop = caption(second)
            if stop:
                return stop
            content = (f"Caption of the frame at second {second}: {text}" if text is not None
                       else f"The caption of the frame at second {second} is unavailable; try another second or decide.")
            add("user", content)
            continue
        # end: clamp each pair to [0, duration], drop s > e (and empty ones), merge; whole video if none
        revised = (decision["revised_question"] or "").strip() or question
        kept = [(s, e) for s, e in decision["timestamps"] if s <= e]
        usable = [(min(max(s, 0.0), duration), min(max(e, 0.0), duration)) for s, e in kept]
        if not any(e > s for s, e in usable):
            return _full(duration, question, "no_screening_possible", "the planner kept no usable segment", trace)
        return PlanOutcome(normalize_segments(usable, duration), revised, "succeeded", None, trace)
