"""The paper gateway's field encoding at server version 178: how it spells a value, how it builds a
frame from fields, and a cursor that reads a client's fields in every spelling clients use.

Framing itself (the handshake, length prefixes) is :mod:`addin.protocol.framing`; "unset" numbers are
written the way a real gateway writes them (:mod:`addin.protocol.unset`).
"""

from __future__ import annotations

import math
import re

from ...protocol.framing import ProtocolError, split_fields
from ...protocol.framing import frame as length_prefixed
from ...protocol.unset import UNSET_DOUBLE, UNSET_DOUBLE_TEXT, UNSET_INTEGER

# Integers as clients write them: optional sign, digits. Longer than 19 digits is beyond any field
# (IB's ints are Java int/long), so such text is refused before it is converted at all.
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
MAX_NUMBER_TEXT = 64       # characters: no number a client writes is longer

SERVER_VERSION = 178
MIN_CLIENT_VERSION = 157  # oldest version served (ib_async's floor); message layouts are 178's


def fmt(value) -> str:
    """One field's text as a real gateway writes it (without the terminator).

    bool -> "1"/"0"; None -> ""; the unset double -> ``1.7976931348623157E308``; floats without a
    trailing ".0" noise beyond what ``repr`` gives; Decimal and str as they are.
    """
    if value is None:
        return ""
    if value is True:
        return "1"
    if value is False:
        return "0"
    if isinstance(value, float):
        if value == UNSET_DOUBLE:
            return UNSET_DOUBLE_TEXT
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    return str(value)


def frame(*fields) -> bytes:
    """Encode one message: length prefix + each field NUL-terminated."""
    return length_prefixed("".join(fmt(f) + "\0" for f in fields).encode("latin-1", errors="replace"))


def is_int_text(text: str) -> bool:
    """True when ``text`` is an integer as clients write it (sign, at most 19 digits)."""
    return _INTEGER.fullmatch(text) is not None and INT64_MIN <= int(text) <= INT64_MAX


class Fields:
    """A cursor over one client message's fields, with IB's spellings of unset values.

    Every ``next_*`` raises :class:`ProtocolError` naming the field when the message is too short or
    a value cannot be parsed, so a malformed request is answered with an error, never a crash.
    """

    __slots__ = ("items", "pos")

    def __init__(self, payload: bytes):
        if payload and not payload.endswith(b"\0"):
            payload += b"\0"           # a last field without its NUL still counts
        self.items = [p.decode("latin-1") for p in split_fields(payload)]
        self.pos = 0

    def remaining(self) -> int:
        return len(self.items) - self.pos

    def next_str(self, name: str = "field") -> str:
        if self.pos >= len(self.items):
            raise ProtocolError(f"message ended before {name}")
        v = self.items[self.pos]
        self.pos += 1
        return v

    def next_int(self, name: str = "field", default: int = UNSET_INTEGER) -> int:
        """An integer field: digits with an optional sign, or a decimal spelling of a whole number
        ("3.0"); empty -> ``default``. ProtocolError for anything else: NaN, infinities, fractions,
        numbers outside the signed 64-bit range (IB's widest integer), text longer than 64 characters."""
        v = self.next_str(name).strip()
        if v == "":
            return default
        if _INTEGER.fullmatch(v):
            n = int(v)
        elif len(v) <= MAX_NUMBER_TEXT and _DECIMAL.fullmatch(v):
            f = float(v)
            if not math.isfinite(f) or f != int(f):
                raise ProtocolError(f"{name}: expected an integer, got {_shown(v)}")
            n = int(f)
        else:
            raise ProtocolError(f"{name}: expected an integer, got {_shown(v)}")
        if not INT64_MIN <= n <= INT64_MAX:
            raise ProtocolError(f"{name}: {_shown(v)} is out of range")
        return n

    def next_float(self, name: str = "field", default: float = UNSET_DOUBLE) -> float:
        """A number field: a decimal spelling or IB's infinities; empty -> ``default``. ProtocolError
        for NaN (ibapi never writes one: an unset double is empty or 1.7976931348623157E308) and
        for text that is not a number or is longer than 64 characters."""
        v = self.next_str(name).strip()
        if v == "":
            return default
        if v in ("Infinity", "Infinite", "inf"):
            return math.inf
        if v in ("-Infinity", "-Infinite", "-inf"):
            return -math.inf
        if len(v) > MAX_NUMBER_TEXT or not _DECIMAL.fullmatch(v):
            raise ProtocolError(f"{name}: expected a number, got {_shown(v)}")
        return float(v)

    def next_bool(self, name: str = "field") -> bool:
        v = self.next_str(name).strip()
        if v in ("", "0", "false", "False"):
            return False
        if v in ("1", "true", "True"):
            return True
        if len(v) <= MAX_NUMBER_TEXT and _DECIMAL.fullmatch(v):
            return float(v) != 0
        raise ProtocolError(f"{name}: expected 0 or 1, got {_shown(v)}")

    def next_decimal_str(self, name: str = "field") -> str:
        """A size/quantity field kept as text (ibapi sends Decimal)."""
        return self.next_str(name).strip()


def _shown(text: str, limit: int = 40) -> str:
    """``text`` for an error message: quoted, cut to ``limit`` characters with its length."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"
