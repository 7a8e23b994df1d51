"""TWS API framing, both directions, as ibapi's ``comm`` module does it.

The stream: the client opens with ``API\\0`` and one length-prefixed text ``v{min}..{max}[ options]``
(the client versions it speaks); TWS answers with a frame ``{server version}\\0{connection time}\\0``;
from then on every message is one frame: a 4-byte big-endian length, then the payload, whose first
field is the message id. Fields are NUL-terminated text. From server version 201
(``MIN_SERVER_VER_PROTOBUF``) the client writes the message id as a raw 4-byte int instead.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ibapi import comm
from ibapi.const import MAX_MSG_LEN
from ibapi.server_versions import MAX_CLIENT_VER, MIN_CLIENT_VER

__all__ = ["API_PREFIX", "LENGTH", "MAX_MSG_LEN", "ProtocolError", "FrameTooLong", "version_range",
           "handshake", "parse_version_range", "frame", "frame_size", "Framer", "split_fields",
           "split_message_id", "frame_message_id"]

API_PREFIX = b"API\0"
LENGTH = struct.Struct("!I")       # the 4-byte big-endian length in front of every frame


class ProtocolError(Exception):
    """Bytes that are not valid TWS API (a bad handshake, frame or field)."""


class FrameTooLong(ProtocolError):
    """A length prefix above the reader's limit (by default ``MAX_MSG_LEN``, 16 MiB - 1: no TWS
    message is that long). ``size``: the length it announced; ``limit``: the largest accepted."""

    def __init__(self, size: int, limit: int = MAX_MSG_LEN):
        super().__init__(f"frame of {size} bytes is larger than any TWS message" if limit >= MAX_MSG_LEN
                         else f"frame of {size} bytes is larger than the {limit} accepted here")
        self.size = size
        self.limit = limit


# --- the handshake --------------------------------------------------------------------------------
def version_range(min_version: int = MIN_CLIENT_VER, max_version: int = MAX_CLIENT_VER, options: str = "") -> str:
    """The client's version text: ``v100..N`` (ibapi's range by default), then `` options`` if any."""
    text = f"v{min_version}..{max_version}"
    return f"{text} {options}" if options else text


def handshake(min_version: int = MIN_CLIENT_VER, max_version: int = MAX_CLIENT_VER, options: str = "") -> bytes:
    """The bytes a client opens a connection with: ``API\\0`` + the length-prefixed version range."""
    return API_PREFIX + comm.make_initial_msg(version_range(min_version, max_version, options))


def parse_version_range(payload: bytes) -> tuple[int, int, str]:
    """The server's reading of the client's version frame ``v{min}..{max}[ options]`` ->
    (min_version, max_version, options). Raises ProtocolError for anything else."""
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


# --- frames ---------------------------------------------------------------------------------------
def frame(payload: bytes) -> bytes:
    """One frame: the 4-byte length, then ``payload``."""
    return LENGTH.pack(len(payload)) + payload


def frame_size(data: bytes) -> int | None:
    """The payload length the first frame in ``data`` announces; None while fewer than 4 bytes."""
    return LENGTH.unpack_from(data)[0] if len(data) >= 4 else None


class Framer:
    """Linear framing of a byte stream: ``feed(data)`` appends bytes, ``messages()`` yields each
    complete payload (without its length) once; ``peek()`` / ``advance()`` take them one at a time.
    Cost per message: its own bytes; the consumed prefix is dropped once per feed, not once per
    message. A length above ``limit`` (default ``MAX_MSG_LEN``; a server lowers it before the API
    has started) raises FrameTooLong as soon as the length is read, before the frame's bytes are
    waited for (the payloads before it were yielded)."""

    def __init__(self, data: bytes = b"", limit: int = MAX_MSG_LEN):
        self.buf = bytearray(data)
        self.pos = 0
        self.limit = limit

    def feed(self, data: bytes) -> None:
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data

    def messages(self) -> Iterator[bytes]:
        buf, pos = self.buf, self.pos
        n = len(buf)
        try:
            while n - pos >= 4:
                size = int.from_bytes(buf[pos:pos + 4], "big")
                end = pos + 4 + size
                if size > self.limit:
                    raise FrameTooLong(size, self.limit)
                if end > n:
                    break
                msg = bytes(buf[pos + 4:end])
                pos = end
                self.pos = pos
                yield msg
        finally:
            self.pos = pos

    def peek(self) -> bytes | None:
        """The next complete payload without consuming it (None while incomplete); FrameTooLong
        as ``messages``."""
        buf, pos = self.buf, self.pos
        if len(buf) - pos < 4:
            return None
        size = int.from_bytes(buf[pos:pos + 4], "big")
        if size > self.limit:
            raise FrameTooLong(size, self.limit)
        end = pos + 4 + size
        return bytes(buf[pos + 4:end]) if end <= len(buf) else None

    def advance(self) -> None:
        """Consume the payload ``peek`` returned."""
        self.pos += 4 + int.from_bytes(self.buf[self.pos:self.pos + 4], "big")

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self.buf) - self.pos


# --- fields ---------------------------------------------------------------------------------------
def split_fields(payload: bytes) -> list[bytes]:
    """A payload's NUL-terminated fields, as ibapi's ``comm.read_fields`` splits them (the empty
    piece after the last NUL dropped)."""
    fields = payload.split(b"\0")
    fields.pop()
    return fields


def split_message_id(payload: bytes, raw_int_id: bool) -> tuple[int, bytes]:
    """(message id, the rest of the payload). ``raw_int_id``: the id is a 4-byte big-endian int
    (server version >= 201, ``MIN_SERVER_VER_PROTOBUF``), else the first text field. ValueError
    when a text id is missing or not a number."""
    if raw_int_id:
        return int.from_bytes(payload[:4], "big"), payload[4:]
    cut = payload.index(b"\0")
    return int(payload[:cut]), payload[cut + 1:]


def frame_message_id(message: bytes) -> int:
    """The message id of one whole frame a client wrote (length prefix included): a raw 4-byte id
    (its first byte is 0: ids are small) or a text one; 0 when the text id is empty."""
    body = bytes(message[4:])
    if body[:1] == b"\x00":
        return int.from_bytes(body[:4], "big")
    return int(body.split(b"\0", 1)[0] or 0)
