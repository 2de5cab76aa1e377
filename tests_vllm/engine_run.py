"""Run one vLLM engine in its own process (each engine starts its own worker processes, and the
plugin reads the environment once per process), generate for a few video prompts, write JSON.

    python tests_vllm/engine_run.py SPEC.json OUT.json

SPEC: {"model": dir, "engine": {extra LLM kwargs}, "max_tokens": int,
       "prompts": [{"text": str, "video": {"num_frames": T, "size": S, "seed": s}}]}
OUT:  {"results": [{"prompt_token_ids": [...], "output_token_ids": [...]}], "engine_s": float}
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(spec_path, out_path):
    from helpers import engine, video
    from vllm import SamplingParams

    with open(spec_path) as f:
        spec = json.load(f)
    t0 = time.time()
    llm = engine(spec["model"], **spec.get("engine", {}))
    engine_s = time.time() - t0
    requests = [{"prompt": p["text"], "multi_modal_data": {"video": video(**p["video"])}} for p in spec["prompts"]]
    outs = llm.generate(requests, SamplingParams(max_tokens=spec.get("max_tokens", 4), temperature=0.0))
    results = [{"prompt_token_ids": list(o.prompt_token_ids), "output_token_ids": list(o.outputs[0].token_ids)}
               for o in outs]
    with open(out_path, "w") as f:
        json.dump({"results": results, "engine_s": engine_s}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
