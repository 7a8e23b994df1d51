"""TWS API framing and field encoding at server version 178, as the paper gateway speaks it.

Every frame is a 4-byte big-endian length followed by NUL-terminated text fields; the first field of
every frame after the handshake is the message id. "Unset" numbers are written the way a real gateway
writes them (``2147483647`` and ``1.7976931348623157E308``) and parsed in every spelling clients use.
"""

from __future__ import annotations

import math
import struct

SERVER_VERSION = 178
MIN_CLIENT_VERSION = 157  # oldest version served (ib_async's floor); message layouts are 178's

UNSET_INT = 2147483647
UNSET_LONG = 9223372036854775807
UNSET_DOUBLE = 1.7976931348623157e308
UNSET_DOUBLE_TEXT = "1.7976931348623157E308"

_LEN = struct.Struct("!I")


class ProtocolError(Exception):
    """A client sent something that is not a valid TWS API message."""


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
    body = "".join(fmt(f) + "\0" for f in fields).encode("latin-1", errors="replace")
    return _LEN.pack(len(body)) + body


def frame_text(text: str) -> bytes:
    """Length-prefix raw text (used for the handshake, whose fields the caller terminates)."""
    body = text.encode("latin-1", errors="replace")
    return _LEN.pack(len(body)) + body


def split_frames(buf: bytearray) -> list[bytes]:
    """Remove and return every complete frame payload at the front of ``buf``."""
    out = []
    pos = 0
    n = len(buf)
    while n - pos >= 4:
        (size,) = _LEN.unpack_from(buf, pos)
        if size > 16 * 1024 * 1024:
            raise ProtocolError(f"frame of {size} bytes is larger than any TWS message")
        if n - pos - 4 < size:
            break
        out.append(bytes(buf[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    if pos:
        del buf[:pos]
    return out


def parse_handshake(payload: bytes) -> tuple[int, int, str]:
    """Parse the client's ``v{min}..{max}[ options]`` frame -> (min_version, max_version, options)."""
    text = payload.decode("ascii", errors="replace").strip("\0")
    head, _, options = text.partition(" ")
    if not head.startswith("v"):
        raise ProtocolError(f"bad version handshake {text!r}")
    lo, sep, hi = head[1:].partition("..")
    try:
        low = int(lo)
        high = int(hi) if sep else low
    except ValueError:
        raise ProtocolError(f"bad version handshake {text!r}") from None
    return low, high, options


class Fields:
    """A cursor over one client message's fields, with IB's spellings of unset values.

    Every ``next_*`` raises :class:`ProtocolError` naming the field when the message is too short or
    a value cannot be parsed, so a malformed request is answered with an error, never a crash.
    """

    __slots__ = ("items", "pos")

    def __init__(self, payload: bytes):
        parts = payload.split(b"\0")
        if parts and parts[-1] == b"":
            parts.pop()
        self.items = [p.decode("latin-1") for p in parts]
        self.pos = 0

    def remaining(self) -> int:
        return len(self.items) - self.pos

    def next_str(self, name: str = "field") -> str:
        if self.pos >= len(self.items):
            raise ProtocolError(f"message ended before {name}")
        v = self.items[self.pos]
        self.pos += 1
        return v

    def next_int(self, name: str = "field", default: int = UNSET_INT) -> int:
        v = self.next_str(name).strip()
        if v == "":
            return default
        try:
            return int(v)
        except ValueError:
            try:
                f = float(v)
            except ValueError:
                raise ProtocolError(f"{name}: expected an integer, got {v!r}") from None
            if f != int(f):
                raise ProtocolError(f"{name}: expected an integer, got {v!r}") from None
            return int(f)

    def next_float(self, name: str = "field", default: float = UNSET_DOUBLE) -> float:
        v = self.next_str(name).strip()
        if v == "":
            return default
        if v in ("Infinity", "Infinite", "inf"):
            return math.inf
        if v in ("-Infinity", "-Infinite", "-inf"):
            return -math.inf
        try:
            return float(v)
        except ValueError:
            raise ProtocolError(f"{name}: expected a number, got {v!r}") from None

    def next_bool(self, name: str = "field") -> bool:
        v = self.next_str(name).strip()
        if v in ("", "0", "false", "False"):
            return False
        if v in ("1", "true", "True"):
            return True
        try:
            return int(float(v)) != 0
        except ValueError:
            raise ProtocolError(f"{name}: expected 0 or 1, got {v!r}") from None

    def next_decimal_str(self, name: str = "field") -> str:
        """A size/quantity field kept as text (ibapi sends Decimal)."""
        return self.next_str(name).strip()


def is_unset(value) -> bool:
    return value is None or value == UNSET_INT or value == UNSET_DOUBLE or value == UNSET_LONG
