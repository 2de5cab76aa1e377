import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import make_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """family -> a tiny checkpoint folder vLLM's CPU build can run (built once per session)."""
    root = tmp_path_factory.mktemp("checkpoints")
    made = {}

    def get(family):
        if family not in made:
            made[family] = make_checkpoint(str(root / family), family)
        return made[family]

    return get
