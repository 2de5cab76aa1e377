"""The vLLM plugin's pure parts, without vLLM (the engine tests are tests_vllm/, `make test-vllm`)."""
from types import SimpleNamespace

import pytest
import torch

from token_compressor.config import ConfigError, from_env
from token_compressor.integrations.vllm import (MIN_RATE, Plan, check_architecture, check_vllm_version,
                                                configure_engine_args, outer_vision_starts)

VS, VE, VIDEO, IMAGE = 10, 11, 12, 13


def _plan(**env):
    return Plan.from_config(from_env(env))


def test_outer_vision_start_is_the_one_followed_by_another_start():
    # text <vs> <t0> <vs> pad pad <ve> <t1> <vs> <ve> <ve> text <vs> image <ve>
    ids = torch.tensor([1, VS, 2, VS, VIDEO, VIDEO, VE, 3, VS, VE, VE, 4, VS, IMAGE, VE])
    outer = outer_vision_starts(ids, VS, VE, (IMAGE, VIDEO))
    assert outer.nonzero().flatten().tolist() == [1]
    # a bare <|video_pad|> prompt, a frame with no kept token, an image: nothing is outer
    bare = torch.tensor([1, 2, VS, VIDEO, VE, 3, VS, VE, 5, VS, IMAGE, VE])
    assert not outer_vision_starts(bare, VS, VE, (IMAGE, VIDEO)).any()


def test_plan_refuses_content_dependent_counts_and_bad_options():
    with pytest.raises(ConfigError, match="COMPRESSOR='holitom' cannot run inside vLLM"):
        _plan(COMPRESSOR="holitom")
    with pytest.raises(ConfigError, match="TOKEN_COMPRESSOR_FASTVID_FILL_BUDGET=1"):
        _plan(COMPRESSOR="fastvid")
    assert _plan(COMPRESSOR="fastvid", TOKEN_COMPRESSOR_FASTVID_FILL_BUDGET="1").count(4, 16) == 4 * 4
    # R_RATIO = 1 keeps everything, whatever the method (as in the transformers path)
    plan = _plan(COMPRESSOR="holitom", R_RATIO="1")
    assert plan.effective_method == "none" and plan.count(3, 9) == 27 and plan.vllm_rate == MIN_RATE


def test_engine_args_get_the_rate_and_both_prunings_are_refused():
    plan = _plan(COMPRESSOR="vidcom2", R_RATIO="0.3")
    args = SimpleNamespace(video_pruning_rate=None, video_pruning_method="evs")
    configure_engine_args(args, plan)
    assert args.video_pruning_rate == pytest.approx(0.7) and args.video_pruning_method == "evs"
    configure_engine_args(args, plan)  # create_engine_config may run twice on the same args
    with pytest.raises(ConfigError, match=r"COMPRESSOR='vidcom2' and --video-pruning-rate=0.5 both ask"):
        configure_engine_args(SimpleNamespace(video_pruning_rate=0.5, video_pruning_method="evs"), plan)


def test_architectures_and_versions():
    plan = _plan(COMPRESSOR="dycoke")
    check_architecture("Qwen3VLMoeForConditionalGeneration", plan)
    with pytest.raises(ConfigError, match="Qwen2VLForConditionalGeneration has no video pruning seam"):
        check_architecture("Qwen2VLForConditionalGeneration", plan)
    assert check_vllm_version("0.32.0") == "0.32.0" and check_vllm_version("0.34.1+cu130")
    with pytest.raises(ConfigError, match=r"vLLM 0.35.0 is not supported .* supported: vllm>=0.32,<0.35"):
        check_vllm_version("0.35.0")
