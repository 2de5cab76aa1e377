"""Bad configuration fails when the engine is built, before any engine process starts, with one
line naming the problem (a `ConfigError` from the plugin's `register()` or its engine-config hook)."""
import pytest

from helpers import prompt, run_engine

ONE_PROMPT = [{"text": prompt(), "video": {"num_frames": 4, "size": 112, "seed": 0}}]

BAD = [
    ("unknown method", "qwen2_5_vl", {"COMPRESSOR": "nope"}, {},
     "COMPRESSOR='nope' is not a known compressor; expected one of: "),
    ("bad ratio", "qwen2_5_vl", {"COMPRESSOR": "vidcom2", "R_RATIO": "1.5"}, {},
     "R_RATIO='1.5' is out of range; expected a number in (0, 1]"),
    ("content-dependent count", "qwen2_5_vl", {"COMPRESSOR": "holitom"}, {},
     "COMPRESSOR='holitom' cannot run inside vLLM: holitom keeps a content-dependent number of tokens"),
    ("fastvid without its budget fill", "qwen3_vl", {"COMPRESSOR": "fastvid"}, {},
     "set TOKEN_COMPRESSOR_FASTVID_FILL_BUDGET=1"),
    ("a bad method variable", "qwen2_5_vl", {"COMPRESSOR": "dycoke", "DYCOKE_K": "2"}, {},
     "DYCOKE_K='2' is out of range"),
    ("both prunings asked", "qwen2_5_vl", {"COMPRESSOR": "vidcom2"}, {"video_pruning_rate": 0.5},
     "COMPRESSOR='vidcom2' and --video-pruning-rate=0.5 both ask for video pruning: unset one"),
    ("an architecture without the seams", "qwen2_vl", {"COMPRESSOR": "vidcom2"}, {},
     "vLLM's Qwen2VLForConditionalGeneration has no video pruning seam token_compressor supports"),
]


@pytest.mark.parametrize("case,family,env,engine_kwargs,message", BAD, ids=[b[0] for b in BAD])
def test_bad_configuration_fails_at_startup(case, family, env, engine_kwargs, message, checkpoints, tmp_path):
    proc, results, _ = run_engine(checkpoints(family), env, ONE_PROMPT, str(tmp_path), engine_kwargs, capture=False)
    assert proc.returncode != 0 and results is None
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("token_compressor.config.ConfigError: ") and message in last, proc.stdout[-3000:]
    assert "EngineCore" not in proc.stdout  # refused before vLLM started its engine process
