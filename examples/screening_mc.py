"""EMC screening in front of a compressed Qwen-VL model, on a multiple-choice question.

    EMC_SCREENER=llm EMC_BASE_URL=http://localhost:8000/v1 EMC_MODEL=Qwen2.5-VL-7B-Instruct \
    python examples/screening_mc.py --model Qwen/Qwen2.5-VL-7B-Instruct --video video.mp4

Benchmark questions carry their options (lmms-eval's do). The screener must see the question
only, and its rewrite must replace the question only: `split_options` cuts the options off,
`screen_messages` screens the stem and puts the rewritten stem back in front of the untouched
options (and any post-prompt). The same by hand:

    stem, options = split_options(question)
    result = screen(video, stem)
    prompt = replace_question(prompt, result.question, stem)

Without `EMC_SCREENER` (or with `none`) the whole video and the question are kept.
Needs `pip install ".[eval]"`.
"""
import argparse

from qwen_vl_utils import process_vision_info
from transformers import AutoModelForImageTextToText, AutoProcessor

import token_compressor as tc
from token_compressor.screening import screen_messages, split_options

QUESTION = ("What does the bright square do?\n"
            "A. It moves across the frame.\n"
            "B. It stays still.\n"
            "C. It changes colour.\n"
            "D. It disappears.\n"
            "Answer with the option's letter from the given choices directly.")

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="Qwen/Qwen2.5-VL-7B-Instruct", help="hub id or local folder")
parser.add_argument("--video", required=True)
parser.add_argument("--question", default=QUESTION, help="a question with its options, one per line")
parser.add_argument("--method", default="vidcom2")
parser.add_argument("--ratio", type=float, default=0.25)
args = parser.parse_args()

model = AutoModelForImageTextToText.from_pretrained(args.model, dtype="auto", device_map="auto")
processor = AutoProcessor.from_pretrained(args.model)
tc.apply(model, method=args.method, ratio=args.ratio)

messages = [{"role": "user", "content": [{"type": "video", "video": args.video, "max_pixels": 360 * 420},
                                         {"type": "text", "text": args.question}]}]
result = screen_messages(messages)[0]  # in place: the video item -> the kept frames, the stem rewritten
asked = messages[0]["content"][1]["text"]
_, options = split_options(args.question)
assert asked.endswith(options), "the options must reach the model unchanged"
print(f"screening: {result.status}, kept {result.kept_ratio:.0%} of the video, segments {result.segments}")
print(f"asked: {asked!r}")

text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
images, videos, video_kwargs = process_vision_info(messages, return_video_kwargs=True, return_video_metadata=True,
                                                   image_patch_size=model.config.vision_config.patch_size)
videos, video_metadata = map(list, zip(*videos))
inputs = processor(text=[text], images=images, videos=videos, video_metadata=video_metadata, do_resize=False,
                   return_tensors="pt", **video_kwargs).to(model.device)
out = model.generate(**inputs, max_new_tokens=8)
print("answer:", processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0])
stats = tc.last_stats(model)
print(f"{stats['method']}: kept {stats['visual_tokens_after']} of {stats['visual_tokens_before']} video tokens")
