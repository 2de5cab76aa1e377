"""Several videos and questions in one batch, compressed, with what was kept per sample.

    python examples/batched.py --model Qwen/Qwen2.5-VL-7B-Instruct --video a.mp4 --video b.mp4

Every sample of the batch is compressed on its own (the VidCom² authors' patches skip batches);
the batch is left-padded, as for any batched `generate`. `keep_indices=True` adds each video's
kept rows and their positions in the prompt to `last_stats`. Needs `pip install ".[eval]"`.
Works for the three families (the patch size comes from the model's config).
"""
import argparse

from qwen_vl_utils import process_vision_info
from transformers import AutoModelForImageTextToText, AutoProcessor

import token_compressor as tc

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="Qwen/Qwen2.5-VL-7B-Instruct", help="hub id or local folder")
parser.add_argument("--video", action="append", required=True, help="repeat for more samples")
parser.add_argument("--question", default="What happens in this video?")
parser.add_argument("--method", default="vidcom2")
parser.add_argument("--ratio", type=float, default=0.25)
args = parser.parse_args()

model = AutoModelForImageTextToText.from_pretrained(args.model, dtype="auto", device_map="auto")
processor = AutoProcessor.from_pretrained(args.model)
processor.tokenizer.padding_side = "left"
tc.apply(model, method=args.method, ratio=args.ratio, keep_indices=True)

conversations = [[{"role": "user", "content": [{"type": "video", "video": path, "max_pixels": 360 * 420},
                                               {"type": "text", "text": args.question}]}]
                 for path in args.video]
texts = [processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
images, videos, video_kwargs = process_vision_info(conversations, return_video_kwargs=True, return_video_metadata=True,
                                                   image_patch_size=model.config.vision_config.patch_size)
videos, video_metadata = map(list, zip(*videos))
inputs = processor(text=texts, images=images, videos=videos, video_metadata=video_metadata, do_resize=False,
                   padding=True, return_tensors="pt", **video_kwargs).to(model.device)

out = model.generate(**inputs, max_new_tokens=32)
answers = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
stats = tc.last_stats(model)
for path, answer, sample in zip(args.video, answers, stats["per_sample"]):
    kept = ", ".join(f"{v['after']}/{v['before']}" for v in sample)
    print(f"{path}: kept {kept} video tokens -> {answer.strip()!r}")
first = stats["kept"][0]
print(f"first video: rows {first['keep'][:8]}... at prompt positions {first['positions'][:8]}...")
