"""Qwen2-VL on one video, compressed: the model card's qwen-vl-utils flow, plus two lines.

    python examples/qwen2_vl.py --model Qwen/Qwen2-VL-7B-Instruct --video video.mp4 [--method vidcom2 --ratio 0.25]

Needs `pip install ".[eval]"` (qwen-vl-utils, a video reader, accelerate). The model card's own
arguments work unchanged for Qwen2-VL on the supported transformers.
"""
import argparse

from qwen_vl_utils import process_vision_info
from transformers import AutoModelForImageTextToText, AutoProcessor

import token_compressor as tc

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="Qwen/Qwen2-VL-7B-Instruct", help="hub id or local folder")
parser.add_argument("--video", required=True)
parser.add_argument("--question", default="Describe this video.")
parser.add_argument("--method", default="vidcom2", help="a compressor (token-compressor info lists them), or none")
parser.add_argument("--ratio", type=float, default=0.25, help="share of the video tokens kept")
parser.add_argument("--max-new-tokens", type=int, default=64)
args = parser.parse_args()

model = AutoModelForImageTextToText.from_pretrained(args.model, dtype="auto", device_map="auto")
processor = AutoProcessor.from_pretrained(args.model)
tc.apply(model, method=args.method, ratio=args.ratio)  # <- token-compressor

messages = [{"role": "user", "content": [
    {"type": "video", "video": args.video, "max_pixels": 360 * 420, "fps": 1.0},
    {"type": "text", "text": args.question},
]}]
text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
image_inputs, video_inputs = process_vision_info(messages)
inputs = processor(text=[text], images=image_inputs, videos=video_inputs, padding=True, return_tensors="pt")
inputs = inputs.to(model.device)

generated_ids = model.generate(**inputs, max_new_tokens=args.max_new_tokens)
trimmed = [out[len(inp):] for inp, out in zip(inputs.input_ids, generated_ids)]
print(processor.batch_decode(trimmed, skip_special_tokens=True, clean_up_tokenization_spaces=False)[0])
stats = tc.last_stats(model)  # <- what was kept
print(f"{stats['method']}: kept {stats['visual_tokens_after']} of {stats['visual_tokens_before']} video tokens")
