"""Qwen3-VL on one video, compressed: the model card's qwen-vl-utils flow, plus two lines.

    python examples/qwen3_vl.py --model Qwen/Qwen3-VL-8B-Instruct --video video.mp4 [--method vidcom2 --ratio 0.25]

Needs `pip install ".[eval]"`. The model card's first snippet,
`processor.apply_chat_template(messages, tokenize=True, ...)`, decodes the video inside
transformers, which needs torchcodec (not a dependency here; torchvision's reader is gone). The
card's qwen-vl-utils snippet works as written: frames and their metadata from qwen-vl-utils
(`image_patch_size=16`, the metadata gives Qwen3-VL its per-frame timestamps), `do_resize=False`.
"""
import argparse

from qwen_vl_utils import process_vision_info
from transformers import AutoModelForImageTextToText, AutoProcessor

import token_compressor as tc

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="Qwen/Qwen3-VL-8B-Instruct", help="hub id or local folder")
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
images, videos, video_kwargs = process_vision_info(messages, image_patch_size=16, return_video_kwargs=True,
                                                   return_video_metadata=True)
if videos is not None:
    videos, video_metadatas = map(list, zip(*videos))
else:
    video_metadatas = None
inputs = processor(text=text, images=images, videos=videos, video_metadata=video_metadatas,
                   return_tensors="pt", do_resize=False, **video_kwargs)
inputs = inputs.to(model.device)

generated_ids = model.generate(**inputs, max_new_tokens=args.max_new_tokens)
trimmed = [out[len(inp):] for inp, out in zip(inputs.input_ids, generated_ids)]
print(processor.batch_decode(trimmed, skip_special_tokens=True, clean_up_tokenization_spaces=False)[0])
stats = tc.last_stats(model)  # <- what was kept
print(f"{stats['method']}: kept {stats['visual_tokens_after']} of {stats['visual_tokens_before']} video tokens")
