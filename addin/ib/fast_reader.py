"""A faster inbound path for ibapi: our own socket reader and decoders for the hot messages.

ibapi reads a connection with two threads: ``EReader`` (``recv`` 4 KiB pieces joined with
``allbuf += buf``, then slicing the whole remaining buffer once per message: quadratic under a
burst) and ``EClient.run`` (queue -> ``Decoder.interpret`` with its generic, logging field
handling). :class:`FastClient` is an ``EClient`` whose ``connect`` does the same handshake without
starting an ``EReader`` and whose ``run`` is one loop that ``recv``s into a ``bytearray``, frames it
linearly (4-byte big-endian length + payload) and decodes each message in arrival order, on the
same thread:

- TICK_PRICE (1), TICK_SIZE (2), TICK_GENERIC (45), TICK_STRING (46), HISTORICAL_DATA (17) and
  HISTORICAL_DATA_UPDATE (90) by :func:`decode_fast`: the same wrapper calls with the same argument
  values and types as ibapi's ``Decoder`` (tickPrice's ``TickAttrib``, Decimal sizes with ibapi's
  unset sentinels, ``BarData``), parsed completely before any callback so a malformed message can
  fall back to ibapi unchanged;
- everything else (and anything the fast path does not recognise) by ibapi's own
  ``client.decoder.interpret(fields, msgId)``, exactly as ``EClient.run`` calls it.

HISTORICAL_DATA: when the wrapper has ``historicalDataBatch(reqId, rows)`` it gets one call with
every bar as a tuple ``(date: str, open, high, low, close: float, volume, wap: Decimal,
barCount: int)`` instead of one ``historicalData(reqId, BarData)`` per bar (then
``historicalDataEnd`` as usual).

Closing: the socket's end (EOF, an error, or ``disconnect`` from another thread) ends ``run``,
which then calls ``self.disconnect()`` -> ``wrapper.connectionClosed()`` as ibapi's ``run`` does. A
partial frame left at the close is dropped (it can never complete).
"""

from __future__ import annotations

import logging
from decimal import Decimal

from ibapi import decoder
from ibapi.client import EClient
from ibapi.common import PROTOBUF_MSG_ID, BarData, TickAttrib
from ibapi.connection import Connection
from ibapi.const import NO_VALID_ID
from ibapi.errors import BAD_LENGTH, CONNECT_FAIL
from ibapi.server_versions import (
    MAX_CLIENT_VER,
    MIN_CLIENT_VER,
    MIN_SERVER_VER_ENCODE_MSG_ASCII7,
    MIN_SERVER_VER_HISTORICAL_DATA_END,
    MIN_SERVER_VER_PAST_LIMIT,
    MIN_SERVER_VER_PRE_OPEN_BID_ASK,
    MIN_SERVER_VER_PROTOBUF,
    MIN_SERVER_VER_SYNT_REALTIME_BARS,
)
from ibapi.ticktype import TickTypeEnum
from ibapi.utils import BadMessage, ClientException, currentTimeMillis

from ..protocol.framing import Framer, FrameTooLong, handshake, split_fields, split_message_id
from ..protocol.messages import IN
from ..protocol.ticks import SIZE_TICK_OF
from ..protocol.unset import UNSET_DECIMAL, UNSET_DECIMAL_TEXTS

log = logging.getLogger(__name__)

RECV_SIZE = 1 << 18          # bytes per recv(): a whole burst in one call

_NOT_SET = TickTypeEnum.NOT_SET     # 111 in ibapi's enum, not IB's -1

# ibapi's decode(Decimal): empty and these texts mean "unset".
_UNSET_TEXTS = (b"", *(text.encode() for text in UNSET_DECIMAL_TEXTS))


class _DecimalCache:
    """bytes -> Decimal as ibapi's ``decode(Decimal, ...)`` gives it. Sizes repeat a lot and
    Decimal is immutable, so parsed values are shared; the cache is cleared when it grows large."""

    LIMIT = 8192

    def __init__(self):
        self.seed()

    def seed(self) -> None:
        self.values = dict.fromkeys(_UNSET_TEXTS, UNSET_DECIMAL)

    def __call__(self, s: bytes) -> Decimal:
        d = self.values.get(s)
        if d is None:
            d = Decimal(s.decode())
            if len(self.values) >= self.LIMIT:
                self.seed()
            self.values[s] = d
        return d


_PARSE_ERRORS = (ValueError, IndexError, TypeError, UnicodeDecodeError, ArithmeticError)


def _ascii_field(s: bytes) -> str:
    """A field as ibapi's ``interpretWithSignature`` decodes it at version >= 153
    (``unicode-escape``), for plain ASCII without backslashes only (else ValueError: ibapi decodes)."""
    if not s.isascii() or b"\\" in s:
        raise ValueError("not plain ASCII")
    return s.decode("ascii")


class FastDecoder:
    """Decodes the hot messages of one connection into calls on ``wrapper`` (see the module doc).

    ``decode(msg_id, fields)`` returns True when it handled the message, False when the caller must
    hand it to ibapi's ``Decoder.interpret`` (unknown id, or a shape the fast path does not parse).
    ``fields``: the payload's NUL-separated fields after the message id (bytes), as ibapi splits it.
    """

    def __init__(self, wrapper, server_version: int):
        self.wrapper = wrapper
        self.server_version = server_version
        self.decimal = _DecimalCache()
        self.batch = getattr(wrapper, "historicalDataBatch", None)
        self._handlers = {IN.TICK_GENERIC: self._tick_generic, IN.TICK_STRING: self._tick_string,
                          IN.HISTORICAL_DATA: self._historical_data,
                          IN.HISTORICAL_DATA_UPDATE: self._historical_data_update}
        # Wrapper methods bound once: one attribute lookup less per tick.
        self._tickPrice = wrapper.tickPrice
        self._tickSize = wrapper.tickSize
        # Optional: ``price_size_tick(reqId, tickType, price, sizeTickType, size) -> bool`` takes a
        # TICK_PRICE whole (one call, no TickAttrib built); False: make ibapi's calls as usual.
        self._price_size = getattr(wrapper, "price_size_tick", None)
        v = server_version
        self._attr_bits = v >= MIN_SERVER_VER_PAST_LIMIT
        self._pre_open = v >= MIN_SERVER_VER_PRE_OPEN_BID_ASK
        self._unicode = v >= MIN_SERVER_VER_ENCODE_MSG_ASCII7

    def decode(self, msg_id: int, f: list) -> bool:
        # TICK_PRICE and TICK_SIZE inline (the hottest): parse everything, then call the wrapper,
        # so a parse error falls back to ibapi before any callback and a callback's own error is
        # never mistaken for one.
        if msg_id == IN.TICK_PRICE:
            # version, reqId, tickType, price, size, attrMask (processTickPriceMsg)
            try:
                int(f[0] or 0)
                req_id = int(f[1] or 0)
                tick_type = int(f[2] or 0)
                price = float(f[3] or 0)
                size = self.decimal(f[4])
                mask = int(f[5] or 0)
            except _PARSE_ERRORS:
                return False
            size_type = SIZE_TICK_OF.get(tick_type, _NOT_SET)
            if self._price_size is not None and self._price_size(req_id, tick_type, price, size_type, size):
                return True
            attrib = TickAttrib()
            if self._attr_bits:
                attrib.canAutoExecute = mask & 1 != 0
                attrib.pastLimit = mask & 2 != 0
                if self._pre_open:
                    attrib.preOpen = mask & 4 != 0
            else:
                attrib.canAutoExecute = mask == 1
            self._tickPrice(req_id, tick_type, price, attrib)
            if size_type != _NOT_SET:
                self._tickSize(req_id, size_type, size)
            return True
        if msg_id == IN.TICK_SIZE:
            # version, reqId, tickType, size (processTickSizeMsg)
            try:
                int(f[0] or 0)
                req_id = int(f[1] or 0)
                tick_type = int(f[2] or 0)
                size = self.decimal(f[3])
            except _PARSE_ERRORS:
                return False
            if tick_type != _NOT_SET:
                self._tickSize(req_id, tick_type, size)
            return True
        handler = self._handlers.get(msg_id)
        if handler is None:
            return False
        try:
            call = handler(f)
        except _PARSE_ERRORS:
            return False              # ibapi decodes it (and raises what it raises)
        if call is None:
            return False
        call()
        return True

    # The other parsers return a closure making the wrapper calls, so nothing is called before
    # the whole message parsed (a fallback to ibapi never repeats a callback).
    def _signature_fields(self, f):
        # interpretWithSignature: the version field skipped, exactly 3 more, unicode-escape text.
        if len(f) != 4 or not self._unicode:
            return None
        return int(_ascii_field(f[1])), int(_ascii_field(f[2])), _ascii_field(f[3])

    def _tick_generic(self, f):
        parsed = self._signature_fields(f)
        if parsed is None:
            return None
        req_id, tick_type, value = parsed[0], parsed[1], float(parsed[2])
        method = self.wrapper.tickGeneric
        return lambda: method(req_id, tick_type, value)

    def _tick_string(self, f):
        parsed = self._signature_fields(f)
        if parsed is None:
            return None
        req_id, tick_type, value = parsed
        method = self.wrapper.tickString
        return lambda: method(req_id, tick_type, value)

    def _historical_data(self, f):
        # processHistoricalDataMsg
        v = self.server_version
        i = 0
        if v < MIN_SERVER_VER_SYNT_REALTIME_BARS:
            return None               # old layout: ibapi's decoder
        req_id = int(f[i] or 0)
        i += 1
        with_dates = v < MIN_SERVER_VER_HISTORICAL_DATA_END
        if with_dates:
            start = f[i].decode("UTF-8", errors="backslashreplace")
            end = f[i + 1].decode("UTF-8", errors="backslashreplace")
            i += 2
        count = int(f[i] or 0)
        i += 1
        if len(f) < i + 8 * max(count, 0):
            return None               # short message: ibapi raises BadMessage at the right bar
        dec = self.decimal
        rows = []
        append = rows.append
        for _ in range(count):
            append((f[i].decode("UTF-8", errors="backslashreplace"), float(f[i + 1] or 0), float(f[i + 2] or 0),
                    float(f[i + 3] or 0), float(f[i + 4] or 0), dec(f[i + 5]), dec(f[i + 6]), int(f[i + 7] or 0)))
            i += 8
        wrapper = self.wrapper
        batch = self.batch

        def call():
            if batch is not None:
                batch(req_id, rows)
            else:
                historical_data = wrapper.historicalData
                for row in rows:
                    historical_data(req_id, bar_from_row(row))
            if with_dates:
                wrapper.historicalDataEnd(req_id, start, end)
        return call

    def _historical_data_update(self, f):
        # processHistoricalDataUpdateMsg: reqId, barCount, date, open, close, high, low, wap, volume
        req_id = int(f[0] or 0)
        bar = BarData()
        bar.barCount = int(f[1] or 0)
        bar.date = f[2].decode("UTF-8", errors="backslashreplace")
        bar.open = float(f[3] or 0)
        bar.close = float(f[4] or 0)
        bar.high = float(f[5] or 0)
        bar.low = float(f[6] or 0)
        bar.wap = self.decimal(f[7])
        bar.volume = self.decimal(f[8])
        method = self.wrapper.historicalDataUpdate
        return lambda: method(req_id, bar)


def bar_from_row(row: tuple) -> BarData:
    """An ibapi BarData from a batch row ``(date, open, high, low, close, volume, wap, barCount)``
    (attributes set in ibapi's order)."""
    bar = BarData()
    bar.date, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.wap, bar.barCount = row
    return bar


class FastClient(EClient):
    """ibapi's EClient (all outbound requests unchanged) with our reader: ``connect`` performs
    ibapi's handshake (API prefix, version range, server version + connection time, START_API) but
    starts no ``EReader``; ``run`` reads, frames and decodes on the calling thread until the socket
    ends, then calls ``disconnect()`` (-> ``wrapper.connectionClosed()``), as ``EClient.run`` does."""

    def __init__(self, wrapper):
        super().__init__(wrapper)
        self._framer = Framer()
        self.fast: FastDecoder | None = None

    def connect(self, host, port, clientId):
        try:
            self.validateInvalidSymbols(host)
        except ClientException as ex:
            self.wrapper.error(NO_VALID_ID, currentTimeMillis(), ex.code, ex.msg + ex.text)
            return
        try:
            self.checkConnected()
        except ClientException as ex:
            self.wrapper.error(NO_VALID_ID, currentTimeMillis(), ex.code, ex.msg)
            return
        try:
            self.host, self.port, self.clientId = host, port, clientId
            self.conn = Connection(self.host, self.port)
            self.conn.connect()
            self.setConnState(EClient.CONNECTING)
            self.conn.sendMsg(handshake(MIN_CLIENT_VER, MAX_CLIENT_VER, self.connectOptions or ""))
            self.decoder = decoder.Decoder(self.wrapper, self.serverVersion())
            self._framer = framer = Framer()
            fields: tuple = ()
            # Messages before the server version (ibapi: "sometimes I get news") go to the decoder.
            while len(fields) != 2:
                self.decoder.interpret(fields, 0)
                got = next(framer.messages(), None)
                if got is None:
                    data = self._recv_handshake()
                    if data is None:
                        self.reset()
                        return
                    framer.feed(data)
                    fields = ()
                    continue
                fields = tuple(split_fields(got))
            server_version, conn_time = fields
            self.connTime = conn_time
            self.serverVersion_ = int(server_version)
            self.decoder.serverVersion = self.serverVersion()
            self.fast = FastDecoder(self.wrapper, self.serverVersion())
            self.setConnState(EClient.CONNECTED)
            self.startApi()
            self.wrapper.connectAck()
        except OSError:
            if self.wrapper:
                self.wrapper.error(NO_VALID_ID, currentTimeMillis(), CONNECT_FAIL.code(), CONNECT_FAIL.msg())
            self.disconnect()

    def _recv_handshake(self) -> bytes | None:
        """One recv during the handshake (ibapi's socket timeout of 1 s repeats it); None once closed."""
        sock = self.conn.socket if self.conn is not None else None
        while sock is not None:
            try:
                data = sock.recv(RECV_SIZE)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                self.conn.disconnect()
                return None
            return data
        return None

    def run(self):
        """The message loop: recv -> frames -> fast decoder or ibapi's decoder, in order."""
        try:
            conn = self.conn
            sock = conn.socket if conn is not None else None
            framer = self._framer
            fast = self.fast
            # Read once: disconnect() from another thread resets serverVersion_ to None.
            protobuf = (self.serverVersion() or 0) >= MIN_SERVER_VER_PROTOBUF
            while sock is not None:
                try:
                    for msg in framer.messages():
                        self._process(msg, fast, protobuf)
                except FrameTooLong as exc:
                    self.wrapper.error(NO_VALID_ID, currentTimeMillis(), BAD_LENGTH.code(),
                                       f"{BAD_LENGTH.msg()}:{exc.size}")
                    break
                try:
                    data = sock.recv(RECV_SIZE)
                except TimeoutError:
                    self.msgLoopTmo()
                    continue
                except OSError:
                    break             # closed under us (disconnect from another thread)
                if not data:
                    break             # EOF: the server closed
                framer.feed(data)
        finally:
            self.disconnect()

    def _process(self, text: bytes, fast: FastDecoder | None, protobuf: bool) -> None:
        try:
            msg_id, text = split_message_id(text, protobuf)
            if protobuf and msg_id > PROTOBUF_MSG_ID:
                self.decoder.processProtoBuf(text, msg_id - PROTOBUF_MSG_ID)
                self.msgLoopRec()
                return
            fields = split_fields(text)
            if fast is None or not fast.decode(msg_id, fields):
                self.decoder.interpret(tuple(fields), msg_id)
            self.msgLoopRec()
        except BadMessage:
            log.info("BadMessage")
