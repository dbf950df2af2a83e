"""`verikit compare`: methods (and other verifiers' imported results) side by side over a benchmark set.

    from verikit.compare import compare, parse_methods, Settings
    outcome = compare("suite/instances.csv", "out", parse_methods("ibp,crown"), Settings(mode="bounds"))

Modules, one concept each: `tasks` (the set's measurements) and `experiment` (YAML experiments),
`methods` (what is compared), `measure` (one timed measurement) with `memory` (its peak RSS),
`records` (tidy CSV / JSON lines, resumable), `runner` (serial or worker processes), `peers` (other
tools' results), `summary` (tables), `plots` (matplotlib), `comparison` (the whole run).
"""
from __future__ import annotations

from verikit.compare.comparison import Outcome, compare
from verikit.compare.methods import MethodChoice, parse_methods
from verikit.compare.records import COLUMNS, Record, read_records
from verikit.compare.tasks import Settings

__all__ = ["compare", "Outcome", "MethodChoice", "parse_methods", "Settings", "Record", "COLUMNS", "read_records"]
