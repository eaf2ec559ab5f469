"""Unit constants shared by the worker's modules."""

from __future__ import annotations

# arq and Redis count time in milliseconds; Python's clocks give seconds.
MS_PER_S = 1000
