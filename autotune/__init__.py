"""Autotuning of schedules: the Optuna search, its correctness gate and measurement, and
writing the shareable tuning database.

Reading the database (which record applies to a call) is schedule lookup, a floor below
(``schedules.lookup``, ``schedules.database``); here:

- ``autotune.tuner.tune(...)``: the Optuna search (Optuna is imported only by this module).
- ``autotune.db``: writing records: merge, atomic multi-writer files.
- ``autotune.evaluate``, ``runner``, ``isolate``, ``measure``: one candidate compiled, checked
  against the float64 oracle and timed, in a worker process when asked.
- ``autotune.replay``: recorded timings instead of kernels, to test the search.
"""
