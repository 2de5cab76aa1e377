import os
import sys

# tests import their helpers (golden.py, tiny_models.py) as top-level modules
sys.path.insert(0, os.path.dirname(__file__))

from hypothesis import settings

# CI must be reproducible: the same examples on every run.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile("ci")
