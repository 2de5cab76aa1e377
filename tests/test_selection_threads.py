"""A CPU selection runs on one thread and leaves torch's thread setting as it found it."""
import pytest
import torch

import token_compressor as tc
from token_compressor.registry import register_compressor, unregister_compressor


@pytest.fixture
def spy():
    seen = []

    def record(features, ratio, fail=False):
        seen.append(torch.get_num_threads())
        if fail:
            raise RuntimeError("compressor failed")
        return torch.ones(features.shape[:2], dtype=torch.bool)

    register_compressor("thread_spy")(record)
    yield seen
    unregister_compressor("thread_spy")


def test_cpu_selection_uses_one_thread_and_restores(spy):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tc.select(torch.randn(8, 4), 2, 0.5, method="thread_spy")
        assert spy == [1]
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="compressor failed"):
            tc.select(torch.randn(8, 4), 2, 0.5, method="thread_spy", fail=True)
        assert spy == [1, 1]
        assert torch.get_num_threads() == 2  # restored on the error path too
    finally:
        torch.set_num_threads(before)
