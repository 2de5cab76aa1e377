"""Built-in compressors; importing this package registers them."""
from . import baselines, dycoke, fastvid, holitom, vidcom2, visionzip  # noqa: F401  (registration side effect)
from .vidcom2 import keep_lowest_per_frame, vidcom2_budgets

__all__ = ["keep_lowest_per_frame", "vidcom2_budgets"]
