"""Small things a hostile user tries on the Python API and the CLI (issue 16, H15/H16)."""
import logging
import os

import pytest
import torch

import token_compressor as tc
from tiny_models import tiny_model
from token_compressor.cli import main
from token_compressor.config import ConfigError
from token_compressor.registry import check_options, register_compressor, unregister_compressor


@pytest.mark.parametrize("method, options, message", [
    ("vidcom2", {"foo": 1}, "compressor 'vidcom2' has no option 'foo'; its options: backend"),
    ("random", {"seed": [1]}, "compressor 'random' option seed=[1] is a list; expected int"),
    ("random", {"seed": True}, "option seed=True is a bool; expected int"),
    ("evs", {"seed": 1}, "compressor 'evs' has no option 'seed'; its options: backend"),
    ("none", {"seed": 1}, "compressor 'none' has no option 'seed'; its options: (none)"),
])
def test_unknown_or_mistyped_options_are_rejected_at_apply(method, options, message):
    model = tiny_model("qwen2_5_vl")
    with pytest.raises(ConfigError) as e:
        tc.apply(model, method, 0.25, **options)
    assert message in str(e.value)
    assert "generate" not in model.__dict__  # nothing patched


def test_options_are_read_from_any_compressors_signature():
    def mine(features, ratio, *, strength: float = 1.0, label: str = "x"):
        return torch.ones(features.shape[:2], dtype=torch.bool)
    register_compressor("hostile_mine", mine)
    try:
        check_options("hostile_mine", {"strength": 2, "label": "y"})  # an int is a float
        with pytest.raises(ValueError, match="option label=3 is a int; expected str"):
            check_options("hostile_mine", {"label": 3})
        with pytest.raises(ValueError, match="has no option 'seed'; its options: strength, label"):
            check_options("hostile_mine", {"seed": 0})
    finally:
        unregister_compressor("hostile_mine")
    check_options("random", {"seed": 3})
    check_options("vidcom2", {"backend": None})


def test_apply_without_a_method_says_compression_is_off(monkeypatch, caplog):
    monkeypatch.delenv("COMPRESSOR", raising=False)
    model = tiny_model("qwen2_5_vl")
    with caplog.at_level(logging.WARNING, logger="token_compressor"):
        assert tc.apply(model) is model
    assert "COMPRESSOR is unset: the model is patched but compression is off" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="token_compressor"):
        tc.apply(model, method="none")  # explicit: no warning
    assert "compression is off" not in caplog.text
    with pytest.raises(ConfigError, match="no method"):
        tc.apply(model, seed=1)


@pytest.mark.parametrize("features, message", [
    (torch.zeros(8, 4, device="meta"), "meta device"),
    (torch.zeros(8, 4).to(torch.float8_e4m3fn), "dtype torch.float8_e4m3fn are not supported"),
])
def test_meta_and_float8_features_are_clear_errors(features, message):
    with pytest.raises(ValueError, match=message):
        tc.select(features, 2, 0.5)


def test_a_folder_passed_to_screen(tmp_path, capsys):
    assert main(["screen", str(tmp_path), "q?"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a folder, expected a video file" in err


def test_ratio_one_with_vidcom2_is_documented_and_true(capsys):
    torch.manual_seed(0)
    T, N = 6, 64
    features = torch.randn(1, N, 32).repeat(T, 1, 1) + 0.01 * torch.randn(T, N, 32)
    features[0] = torch.randn(N, 32)  # one frame stands out
    sel = tc.select(features.reshape(T * N, 32), T, 1.0, "vidcom2")
    assert sel.budgets[0] == N and 0.8 < sel.kept_fraction < 1.0  # the clamped frame's surplus is lost
    assert tc.select(features.reshape(T * N, 32), T, 1.0, "none").kept_fraction == 1.0
    assert main(["info"]) == 0
    assert "R_RATIO=1 keeps every token in a model, for every method" in capsys.readouterr().out
    readme = open(os.path.join(os.path.dirname(__file__), "..", "docs", "configuration.md"), encoding="utf-8").read()
    assert "`select(..., ratio=1)` stays the published algorithm" in readme
