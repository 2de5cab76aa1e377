"""Tiny Qwen-VL checkpoint folders (model + processor, any of the three families) saved offline, and a real mp4."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'video' or 'video' in c %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' or 'image' in c %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in c %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_mp4(path, frames=8, size=112, fps=4):
    """A real h264 mp4: a moving bright square on a gradient, written with PyAV."""
    import av

    container = av.open(str(path), mode="w")
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(frames):
        img = np.stack([(xx * 2 + i * 10) % 256, (yy * 2) % 256, np.full_like(xx, 80)], -1).astype(np.uint8)
        s = (i * 9) % (size - 24)
        img[s:s + 24, s:s + 24] = 255
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return Path(path)


def _bytes_to_unicode():
    """GPT-2's byte -> printable character table (byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def make_tokenizer():
    from transformers import Qwen2Tokenizer

    byte_vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode().values())}
    tok = Qwen2Tokenizer(vocab=byte_vocab, merges=[], unk_token=None, bos_token=None,
                         eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_checkpoint(folder, family="qwen2_5_vl", configure=None):
    """Save a tiny random model and a working processor into `folder`. `configure(cfg)`, when
    given, may change the model config before the weights are drawn (e.g. vLLM's CPU attention
    needs a text head size >= 32)."""
    import torch
    from transformers import AutoProcessor, Qwen2VLImageProcessor

    from tiny_models import tiny_config, tiny_model

    folder = Path(folder)
    tok = make_tokenizer()
    ids = {name: tok.convert_tokens_to_ids(name) for name in SPECIALS}
    cfg = tiny_config(family)
    vocab = len(tok)
    cfg.text_config.vocab_size = vocab
    cfg.image_token_id, cfg.video_token_id = ids["<|image_pad|>"], ids["<|video_pad|>"]
    cfg.vision_start_token_id, cfg.vision_end_token_id = ids["<|vision_start|>"], ids["<|vision_end|>"]
    cfg.text_config.pad_token_id = ids["<|endoftext|>"]
    cfg.text_config.eos_token_id = ids["<|im_end|>"]
    cfg.text_config.bos_token_id = None
    if configure is not None:
        configure(cfg)
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(cfg).eval()
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.bos_token_id = None
    model.save_pretrained(folder)
    if family == "qwen3_vl":
        from transformers import Qwen3VLProcessor as P, Qwen3VLVideoProcessor as V
        patch = 16
    else:
        from transformers import Qwen2VLVideoProcessor as V
        P = {"qwen2_vl": __import__("transformers").Qwen2VLProcessor,
             "qwen2_5_vl": __import__("transformers").Qwen2_5_VLProcessor}[family]
        patch = 14
    px = dict(min_pixels=(patch * 2) ** 2 * 4, max_pixels=(patch * 2) ** 2 * 16)
    image_proc = Qwen2VLImageProcessor(patch_size=patch, **px)
    video_proc = V(patch_size=patch, **px)
    proc = P(image_processor=image_proc, tokenizer=tok, video_processor=video_proc, chat_template=CHAT_TEMPLATE)
    proc.save_pretrained(folder)
    return folder

# LLaVA's placeholders instead of Qwen's (what the LLaVA-OneVision processor expands)
LLAVA_CHAT_TEMPLATE = (CHAT_TEMPLATE.replace("<|vision_start|><|video_pad|><|vision_end|>", "<video>")
                       .replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>"))


def save_llava_onevision_checkpoint(folder):
    """A tiny random LLaVA-OneVision checkpoint (model + processor) in `folder`: a video model
    that stock lmms-eval runs (`--model llava_hf`) and token-compressor does not compress."""
    import torch
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor,
                              Qwen2Config, SiglipVisionConfig)

    folder = Path(folder)
    tok = make_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIALS + ["<image>", "<video>"]})
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=32, patch_size=8)
    text = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1, vocab_size=len(tok))
    cfg = LlavaOnevisionConfig(vision_config=vision, text_config=text,
                               image_token_index=tok.convert_tokens_to_ids("<image>"),
                               video_token_index=tok.convert_tokens_to_ids("<video>"),
                               vision_feature_layer=-1, image_grid_pinpoints=[[32, 32]])
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(cfg).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(folder)
    square = {"height": 32, "width": 32}
    proc = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=square, crop_size=square, image_grid_pinpoints=[[32, 32]]),
        video_processor=LlavaOnevisionVideoProcessor(size=square), tokenizer=tok, num_image_tokens=16,
        vision_feature_select_strategy="full", chat_template=LLAVA_CHAT_TEMPLATE)
    proc.save_pretrained(folder)
    return folder
