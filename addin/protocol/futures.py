"""Futures months as IB and the exchanges write them: the month codes of localSymbols (ESZ6 =
ES, December, a year ending in 6)."""

MONTH_CODES = "FGHJKMNQUVXZ"   # January to December


def month_code(month: int) -> str:
    """The code of a month (1-12): 12 -> "Z". Raises IndexError outside 1-12."""
    if not 1 <= month <= 12:
        raise IndexError(f"month must be 1-12, got {month}")
    return MONTH_CODES[month - 1]
