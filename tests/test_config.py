import dataclasses

import pytest

from token_compressor.config import Config, ConfigError, from_env


def test_unset_means_off_with_defaults():
    cfg = from_env({})
    assert cfg == Config(compressor=None, ratio=0.25, kernels="auto")
    assert not cfg.enabled


def test_valid_values():
    cfg = from_env({"COMPRESSOR": " VidCom2 ", "R_RATIO": "0.5", "TOKEN_COMPRESSOR_KERNELS": "torch"})
    assert (cfg.compressor, cfg.ratio, cfg.kernels, cfg.enabled) == ("vidcom2", 0.5, "torch", True)
    assert not from_env({"COMPRESSOR": "none"}).enabled
    assert from_env({"R_RATIO": "1"}).ratio == 1.0


def test_config_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        from_env({}).ratio = 0.5


@pytest.mark.parametrize(
    "env, message",
    [
        ({"R_RATIO": "abc"}, r"R_RATIO='abc' is not a number; expected a number in \(0, 1\]"),
        ({"R_RATIO": "0"}, r"R_RATIO='0' is out of range; expected a number in \(0, 1\]"),
        ({"R_RATIO": "1.01"}, r"R_RATIO='1.01' is out of range"),
        ({"R_RATIO": "nan"}, r"R_RATIO='nan' is out of range"),
        ({"R_RATIO": "-0.2"}, r"R_RATIO='-0.2' is out of range"),
        ({"COMPRESSOR": "vidcom3"}, r"COMPRESSOR='vidcom3' is not a known compressor; expected one of: .*vidcom2"),
        ({"TOKEN_COMPRESSOR_KERNELS": "cuda"}, r"TOKEN_COMPRESSOR_KERNELS='cuda' is not a kernel backend; expected one of: auto, triton, torch"),
    ],
)
def test_errors_name_variable_value_and_accepted(env, message):
    with pytest.raises(ConfigError, match=message):
        from_env(env)
