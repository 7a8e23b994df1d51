"""One client connection to the paper gateway: handshake, framing, inbound rate limit, outbound writes.

The connection knows nothing about markets or orders: it reports what happens to it through
:class:`ConnectionEvents` (opened, START_API, each request, closed), which the server provides, and
offers ``send`` / ``send_error`` for the answers. It runs on the gateway's event loop.

Its limits (:class:`ConnectionLimits`, docs/paper-gateway.md "Robustness and limits"): frames of
at most 8 KB and a handshake timeout until START_API; IB's message rate after it (error 100, or
paced with ``+PACEAPI``); a bounded send buffer (a client that stops reading is dropped); and a
share of each event-loop turn, so that one client's stream of requests cannot starve the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ...protocol import errors, times
from ...protocol.framing import API_PREFIX, MAX_MSG_LEN, Framer, ProtocolError, parse_version_range
from ...protocol.messages import OUT
from ...protocol.ticks import LIVE
from ..codec import messages, wire
from .message_rate import MessageRate

log = logging.getLogger(__name__)

MAX_MESSAGES_PER_SECOND = 50
# Before START_API a client sends two small frames (its version range, then START_API with its
# client id and capabilities): a larger length is refused at once, before its bytes are buffered.
PRE_API_MAX_FRAME = 8192
# One connection's share of an event-loop turn: after this many messages or this much time the
# rest waits for the next turn (reading from that socket pauses meanwhile), so every other client
# is read and answered in between.
MESSAGES_PER_TURN = 16
TURN_BUDGET = 0.002        # seconds
# TWS's client id is a Java int.
CLIENT_ID_RANGE = range(-2 ** 31, 2 ** 31)
PACE_API_OPTION = "+PACEAPI"

# Where the request id sits in a client message (index after the message id), so that error 100 can
# name the request it refused: most requests carry "version, reqId", a few carry the id first.
_REQ_ID_INDEX = {OUT.REQ_MKT_DATA: 1, OUT.CANCEL_MKT_DATA: 1, OUT.REQ_HISTORICAL_DATA: 0,
                 OUT.CANCEL_HISTORICAL_DATA: 1, OUT.REQ_CONTRACT_DATA: 1, OUT.REQ_EXECUTIONS: 1,
                 OUT.REQ_ACCOUNT_SUMMARY: 1, OUT.CANCEL_ACCOUNT_SUMMARY: 1, OUT.REQ_ACCOUNT_UPDATES_MULTI: 1,
                 OUT.REQ_PNL: 0, OUT.REQ_PNL_SINGLE: 0, OUT.REQ_TICK_BY_TICK_DATA: 0,
                 OUT.CANCEL_TICK_BY_TICK_DATA: 0, OUT.PLACE_ORDER: 0, OUT.CANCEL_ORDER: 1}


def request_id(msg_id: int, fields: wire.Fields) -> int:
    """The request id a client message carries (its order id for orders), read without moving the
    cursor; -1 when it has none or it cannot be read. For errors about a whole message."""
    idx = _REQ_ID_INDEX.get(msg_id)
    if idx is None or idx >= len(fields.items) - 1:
        return -1
    text = fields.items[1 + idx].strip()
    return int(text) if wire.is_int_text(text) else -1


@dataclass(frozen=True)
class ConnectionLimits:
    """A connection's limits. max_rate: messages per second after START_API (error 100 beyond);
    handshake_timeout: seconds from accept to START_API before the socket is closed;
    max_send_buffer: bytes waiting to be sent to the client beyond which it is dropped."""

    max_rate: int = MAX_MESSAGES_PER_SECOND
    handshake_timeout: float = 10.0
    max_send_buffer: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class ConnectionEvents:
    """What a connection tells the gateway. ``refusing()``: why a new socket is to be closed at once
    (a fault, or the gateway's connection limit), else None; ``opened(conn)`` once the socket is
    accepted; ``started(conn, client_id, capabilities)`` at START_API; ``request(conn, msg_id,
    fields)`` for every admitted request after it (fields positioned after the message id);
    ``closed(conn)`` once the socket is gone; ``error_sent(code)`` for every error message sent (the
    gateway counts them: tests check no client earned a 326 or a 162)."""

    refusing: Callable[[], str | None]
    opened: Callable[["ClientConnection"], None]
    started: Callable[["ClientConnection", int, str], None]
    request: Callable[["ClientConnection", int, wire.Fields], None]
    closed: Callable[["ClientConnection"], None]
    error_sent: Callable[[int], None] = lambda code: None


class ClientConnection(asyncio.Protocol):
    """The TWS side of one API socket."""

    def __init__(self, events: ConnectionEvents, limits: ConnectionLimits | None = None):
        self.events = events
        self.limits = limits or ConnectionLimits()
        self.transport: asyncio.Transport | None = None
        self.prefix = b""              # the first bytes, until API\0 is checked
        self.framer = Framer(limit=PRE_API_MAX_FRAME)
        self.state = "prefix"          # prefix -> version -> awaiting_start -> started -> closed
        self.client_id: int | None = None
        self.client_version = 0        # negotiated server version for this client
        self.options = ""
        self.paced = False             # the client asked TWS to pace its requests (+PACEAPI)
        self.peer = ""
        self.rate = MessageRate(self.limits.max_rate)
        self.market_data_type = LIVE
        self.out: list[bytes] = []     # coalesced writes, flushed once per loop turn
        self.out_bytes = 0             # bytes in ``out``
        self._sent_pending = 0         # the transport's unsent bytes at the last flush
        self.peak_buffered = 0         # most bytes ever waiting to be sent (out + the transport's)
        self.dropped_behind = False    # dropped for not reading its answers
        self._flush_scheduled = False
        self.messages_in = 0
        self.messages_out = 0
        self._drain_waiter: asyncio.Future | None = None   # set while the socket's buffer is full
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._resume: asyncio.Handle | None = None         # the next turn's share of reading, if due

    @property
    def max_rate(self) -> int:
        return self.rate.limit

    @max_rate.setter
    def max_rate(self, value: int) -> None:
        self.rate.limit = value
        self.rate.tokens = min(self.rate.tokens, float(value))

    # --- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        refusal = self.events.refusing()
        if refusal:
            log.info("refusing connection from %s (%s)", self.peer, refusal)
            transport.abort()
            self.state = "closed"
            return
        self.events.opened(self)
        self._handshake_timer = asyncio.get_running_loop().call_later(
            self.limits.handshake_timeout, self._handshake_expired)

    def connection_lost(self, exc):
        self.state = "closed"
        self._cancel_timers()
        self.resume_writing()
        self.events.closed(self)

    def data_received(self, data: bytes):
        if self.state == "closed":
            return
        if self.state == "prefix":
            self.prefix += data
            if len(self.prefix) < len(API_PREFIX):
                return
            if self.prefix[:len(API_PREFIX)] != API_PREFIX:
                log.warning("client %s did not start with API\\0; closing", self.peer)
                self.close()
                return
            data, self.prefix = self.prefix[len(API_PREFIX):], b""
            self.state = "version"
        self.framer.feed(data)
        self._process()

    def _process(self) -> None:
        """Handle the complete frames received, within this connection's share of the loop turn."""
        self._resume = None
        started = time.perf_counter()
        handled = 0
        try:
            while self.state != "closed":
                payload = self.framer.peek()
                if payload is None:
                    break
                if self.paced and self.state == "started":
                    wait = self.rate.wait(time.monotonic())
                    if wait > 0:           # +PACEAPI: the message waits for its turn, in order
                        self._pause(wait)
                        return
                self.framer.advance()
                if self.state == "version":
                    self._handshake(payload)
                else:
                    self._on_message(payload)
                handled += 1
                if handled >= MESSAGES_PER_TURN or time.perf_counter() - started > TURN_BUDGET:
                    if self.state != "closed" and self.framer.peek() is not None:
                        self._pause(0.0)
                        return
                    break
        except ProtocolError as exc:
            log.warning("client %s sent a malformed stream (%s); closing", self.peer, exc)
            self.close()
            return
        if self.transport is not None and self.state != "closed":
            self.transport.resume_reading()

    def _pause(self, delay: float) -> None:
        """Stop reading this socket and handle the rest after ``delay`` seconds (0: next turn)."""
        assert self.transport is not None
        self.transport.pause_reading()
        loop = asyncio.get_running_loop()
        self._resume = loop.call_soon(self._process) if delay <= 0 else loop.call_later(delay, self._process)

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self.state in ("prefix", "version", "awaiting_start"):
            log.info("client %s did not start the API within %.1f s; closing", self.peer,
                     self.limits.handshake_timeout)
            self.close()

    def _cancel_timers(self) -> None:
        for handle in (self._handshake_timer, self._resume):
            if handle is not None:
                handle.cancel()
        self._handshake_timer = self._resume = None

    # --- handshake --------------------------------------------------------------------------------
    def _handshake(self, payload: bytes) -> None:
        low, high, self.options = parse_version_range(payload)
        self.paced = PACE_API_OPTION in self.options.upper().split()
        if low > wire.SERVER_VERSION:
            # What a too-old TWS does: it cannot serve the client, so it hangs up.
            log.info("client %s needs server version >= %d, we serve %d: closing",
                     self.peer, low, wire.SERVER_VERSION)
            self.close()
            return
        self.client_version = min(high, wire.SERVER_VERSION)
        if self.client_version < wire.MIN_CLIENT_VERSION:
            log.info("client %s speaks at most version %d; the paper gateway serves %d..%d: closing",
                     self.peer, high, wire.MIN_CLIENT_VERSION, wire.SERVER_VERSION)
            self.close()
            return
        now = times.format_zoned(datetime.now(UTC), "UTC")
        assert self.transport is not None    # bytes arrive only after connection_made
        self.transport.write(wire.frame(self.client_version, now))
        # Nothing else may go out before START_API: ibapi drops bytes that arrive with the version reply.
        self.state = "awaiting_start"

    # --- inbound messages -------------------------------------------------------------------------
    def _on_message(self, payload: bytes) -> None:
        fields = wire.Fields(payload)
        self.messages_in += 1
        if self.state == "awaiting_start":
            self._start_api(fields)
            return
        if not self.paced and not self._admit_rate(fields):
            return
        if self.paced:
            self.rate.admit(time.monotonic())    # a token is there: _process waited for it
        try:
            msg_id = fields.next_int("message id")
        except ProtocolError as exc:
            log.warning("client %s: unreadable message id (%s)", self.client_id, exc)
            self.send_error(-1, errors.REQUEST_READ_ERROR, f"Error reading request: {exc}")
            return
        self.events.request(self, msg_id, fields)

    def _start_api(self, fields: wire.Fields) -> None:
        """START_API (71): version, clientId, optionalCapabilities. An unreadable client id is
        answered with error 320 and the socket closed: no client can be registered without one."""
        try:
            msg_id = fields.next_int("message id")
            if msg_id != OUT.START_API:
                log.warning("client %s sent message %d before START_API; ignored", self.peer, msg_id)
                return
            fields.next_int("version")
            client_id = fields.next_int("clientId", default=0)
            if client_id not in CLIENT_ID_RANGE:
                raise ProtocolError(f"clientId: {client_id} is out of range")
            capabilities = fields.next_str("optionalCapabilities") if fields.remaining() else ""
        except ProtocolError as exc:
            log.warning("client %s: unreadable START_API (%s); closing", self.peer, exc)
            self.send_error(-1, errors.REQUEST_READ_ERROR, f"Error reading request: {exc}")
            self.close()
            return
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.events.started(self, client_id, capabilities)
        if self.state == "started":
            self.framer.limit = MAX_MSG_LEN

    def _admit_rate(self, fields: wire.Fields) -> bool:
        """IB's 50 messages per second (see ``message_rate``): beyond it the message is refused with
        error 100, naming its request id when it has one."""
        if self.rate.admit(time.monotonic()):
            return True
        msg_id_text = fields.items[0].strip() if fields.items else ""
        msg_id = int(msg_id_text) if wire.is_int_text(msg_id_text) else -1
        self.send_error(request_id(msg_id, fields), errors.MAX_RATE_EXCEEDED,
                        f"Max rate of messages per second has been exceeded:max={self.rate.limit} "
                        f"rec={self.rate.received_last_second()} (1)")
        return False

    # --- outbound ---------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Queue one encoded frame; frames queued in one loop turn go out in one socket write.

        A client whose unsent answers would pass ``limits.max_send_buffer`` bytes (it stopped
        reading, or reads far slower than it asks) is dropped with a log line; IB documents no
        figure, the gateway's is 8 MB by default."""
        if self.state == "closed" or self.transport is None:
            return
        self.out.append(data)
        self.out_bytes += len(data)
        self.messages_out += 1
        buffered = self.out_bytes + self._sent_pending
        if buffered > self.limits.max_send_buffer:
            # _sent_pending is the transport's buffer at the last flush: re-read it before judging.
            self._sent_pending = self.transport.get_write_buffer_size()
            buffered = self.out_bytes + self._sent_pending
            if buffered > self.limits.max_send_buffer:
                self._drop_behind(buffered)
                return
        if buffered > self.peak_buffered:
            self.peak_buffered = buffered
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def send_error(self, req_id: int, code: int, text: str) -> None:
        """Send IB's error ``code`` with ``text`` for ``req_id`` (-1: not about a request)."""
        self.events.error_sent(code)
        self.send(messages.error(req_id, code, text))

    def send_duplicate_id(self, req_id: int) -> None:
        """IB's 322 for a request id this connection already streams on (market data, depth, bars)."""
        self.send_error(req_id, errors.PROCESSING_ERROR, f"Error processing request.-'bB' : cause - "
                                                         f"Duplicate ticker id:{req_id}")

    # asyncio flow control: called when the transport's send buffer passes its high-water mark and
    # when it drains below the low one. Only the firehose waits on it (``drained``).
    def pause_writing(self):
        if self._drain_waiter is None:
            self._drain_waiter = asyncio.get_running_loop().create_future()

    def resume_writing(self):
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drained(self) -> None:
        """Return once the socket's send buffer is below asyncio's high-water mark (at once if it is)."""
        if self._drain_waiter is not None:
            await self._drain_waiter

    def flush(self) -> None:
        self._flush_scheduled = False
        if self.out and self.transport is not None and self.state != "closed":
            self.transport.write(b"".join(self.out))
            self._sent_pending = self.transport.get_write_buffer_size()
        self.out.clear()
        self.out_bytes = 0

    def _drop_behind(self, buffered: int) -> None:
        log.warning("client %s (%s) is not reading its answers: %d bytes waiting, limit %d; dropped",
                    self.client_id, self.peer, buffered, self.limits.max_send_buffer)
        self.dropped_behind = True
        self.abort()

    def close(self) -> None:
        if self.state == "closed":
            return
        self.flush()
        self.state = "closed"
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the socket at once, as a network failure would (no flush)."""
        self.out.clear()
        self.out_bytes = 0
        self.state = "closed"
        if self.transport is not None:
            self.transport.abort()

    def __repr__(self):
        return f"<client {self.client_id} {self.peer} {self.state}>"
