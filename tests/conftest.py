import os
import sys

# tests import their helpers (golden.py, tiny_models.py) as top-level modules
sys.path.insert(0, os.path.dirname(__file__))

from hypothesis import settings

# CI must be reproducible: the same examples on every run.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile("ci")

import pytest


@pytest.fixture(autouse=True)
def _fresh_circuit_breakers():
    """Endpoints' circuit breakers are process-wide, keyed by URL: a loopback port one test left
    'down' may be handed to another test's server, so every test starts with none."""
    from token_compressor.screening import openai_client

    openai_client.reset_breakers()
    yield
    openai_client.reset_breakers()
