"""Numbers as table cells, one way for every study table (the CLI's and the report's): '-' for a missing value."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number for a table: '-' for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec) if isinstance(value, (int, float, np.floating)) else str(value)


def pct(value: Any) -> str:
    """A share as a whole percentage: '-' for None or NaN."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.0f}%"
