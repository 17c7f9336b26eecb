"""Step 5 of the pipeline: does a selection pay off? `validate_selection` trains on the selection and its
comparisons and compares them on held-out items (`run.py`); the budget and presets are in `config.py`, the
held-out items in `items.py`, the comparisons' training sets in `training_sets.py`."""
from __future__ import annotations

from ..lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {"validate_selection": "lessdb.validate.run",
                                      "ValidationResult": "lessdb.validate.run",
                                      "ValidateConfig": "lessdb.validate.config"})
