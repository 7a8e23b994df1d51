"""IB's "unset" values: the sentinels ibapi uses for a number nobody set, and how they are spelled on
the wire. The values are ibapi's own (``ibapi.const``); the texts are what a real gateway writes and
what ibapi's ``decode`` reads back as unset."""

from __future__ import annotations

from ibapi.const import UNSET_DECIMAL, UNSET_DOUBLE, UNSET_INTEGER, UNSET_LONG

__all__ = ["UNSET_INTEGER", "UNSET_DOUBLE", "UNSET_LONG", "UNSET_DECIMAL", "UNSET_INTEGER_TEXT",
           "UNSET_DOUBLE_TEXT", "UNSET_LONG_TEXT", "UNSET_DECIMAL_TEXTS", "is_unset"]

UNSET_INTEGER_TEXT = "2147483647"                 # 2**31 - 1
UNSET_DOUBLE_TEXT = "1.7976931348623157E308"      # sys.float_info.max, as Java prints it
UNSET_LONG_TEXT = "9223372036854775807"           # 2**63 - 1

#: Non-empty texts ibapi's ``decode(Decimal, ...)`` maps to UNSET_DECIMAL (an empty field does too).
UNSET_DECIMAL_TEXTS = (UNSET_INTEGER_TEXT, UNSET_LONG_TEXT, UNSET_DOUBLE_TEXT, "-9223372036854775808")


def is_unset(value: object) -> bool:
    """True for None and every unset sentinel (int, double, long, Decimal); False for real values."""
    return (value is None or value == UNSET_INTEGER or value == UNSET_DOUBLE or value == UNSET_LONG
            or value == UNSET_DECIMAL)
