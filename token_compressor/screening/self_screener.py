"""The `self` screener: the loaded Qwen-VL model (any transformers image-text-to-text model with
its processor) plays both the planner and the captioner, so no external service is needed.

The integration that owns the model builds it and passes it to `screen()`:

    screener = self_screener(model, processor, cache=ScreeningCache(config.cache_dir))
    result = screen(video, question, screener, config=config)

Greedy decoding; a small or random model that does not follow the protocol ends in the usual
fallback (whole video, original question, status recorded).
"""
from __future__ import annotations

from typing import List, Optional

from .cache import ScreeningCache
from .planner import CAPTION_PROMPT
from .screeners import PlannerScreener


def _hf_messages(messages: List[dict]) -> List[dict]:
    """OpenAI-style messages -> the content-part format HF chat templates expect."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        out.append({"role": m["role"], "content": content})
    return out


def transformers_generate_fn(model, processor, max_new_tokens: int = 256):
    """`generate(messages, images=None) -> str`: one greedy reply of `model` to HF-format messages."""
    import torch

    def generate(messages: List[dict], images: Optional[list] = None) -> str:
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        kwargs = {"text": [text], "return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        inputs = processor(**kwargs)
        inputs = {k: (v.to(model.device) if hasattr(v, "to") else v) for k, v in inputs.items()}
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        return processor.batch_decode(new_tokens, skip_special_tokens=True)[0]

    return generate


def self_screener(model, processor, *, cache: Optional[ScreeningCache] = None, max_new_tokens: int = 256,
                  model_id: Optional[str] = None, limits: Optional[dict] = None) -> PlannerScreener:
    """ReSimplifyIt-simple with `model` as planner and captioner. `model_id` names the model in
    cache keys (default: its `name_or_path`; an unnamed model gets a per-process id, so random
    test models never share cached captions across runs)."""
    generate = transformers_generate_fn(model, processor, max_new_tokens)
    name = model_id or getattr(model, "name_or_path", "") or f"{type(model).__name__}@{id(model):x}"

    def chat_fn(messages):
        return generate(_hf_messages(messages))

    def describe_image(image):
        return generate([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": CAPTION_PROMPT}]}],
                        images=[image])

    return PlannerScreener("self", chat_fn, describe_image, {"screener": "self", "model": name},
                           caption_model=f"self-{name}", cache=cache, limits=limits)
