"""Whole numbers read from labels, state labels and alerts: ASCII digits only, of bounded length, within a range.

`str.isdigit` and `int` accept far more than a label should hold: `"²".isdigit()` is True and
`int("²")` raises, `int("١٢")` is 12, and `int` refuses more than 4,300 digits. Every number
either daemon reads from a label goes through `whole_number`, which raises only ValueError.
"""

from __future__ import annotations

import re

MAX_DIGITS = 18  # below 2**63: any number a label may hold fits Docker's and Prometheus's integers

_DIGITS = re.compile(r"[0-9]+", re.ASCII)


def whole_number(text: str, *, minimum: int = 0, maximum: int | None = None, digits: int = MAX_DIGITS) -> int:
    """The number `text` spells in ASCII digits, within [minimum, maximum]; ValueError saying what was expected."""
    if maximum is not None:
        digits = min(digits, len(str(maximum)))
    if not isinstance(text, str) or len(text) > digits or not _DIGITS.fullmatch(text):
        raise ValueError(f"expected a whole number {_range(minimum, maximum)} in ASCII digits")
    value = int(text)
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"expected a whole number {_range(minimum, maximum)}")
    return value


def _range(minimum: int, maximum: int | None) -> str:
    return f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
