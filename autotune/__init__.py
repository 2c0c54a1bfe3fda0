"""Autotuning of schedules and the shareable tuning database.

Cheap to import (``hola_dsl.ops`` uses ``lookup`` on every call); the Optuna tuner is loaded
only by ``autotune.tuner``.

- ``autotune.lookup(kernel, backend, target, dtypes, dims, T)``: tuned config or None.
- ``autotune.db``: records, stores, merge, atomic multi-writer files.
- ``autotune.tuner.tune(...)``: the Optuna search with its correctness gate and measurement.
"""

from autotune.db import DatabaseError
from autotune.query import config_for, lookup

__all__ = ["DatabaseError", "config_for", "lookup"]
