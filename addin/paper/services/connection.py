"""One client connection to the paper gateway: handshake, framing, inbound rate limit, outbound writes.

The connection knows nothing about markets or orders: it reports what happens to it through
:class:`ConnectionEvents` (opened, START_API, each request, closed), which the server provides, and
offers ``send`` / ``send_error`` for the answers. It runs on the gateway's event loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ...protocol import errors, times
from ...protocol.framing import API_PREFIX, Framer, ProtocolError, parse_version_range
from ...protocol.messages import OUT
from ...protocol.ticks import LIVE
from ..codec import messages, wire

log = logging.getLogger(__name__)

MAX_MESSAGES_PER_SECOND = 50

# Where the request id sits in a client message (index after the message id), so that error 100 can
# name the request it refused: most requests carry "version, reqId", a few carry the id first.
_REQ_ID_INDEX = {OUT.REQ_MKT_DATA: 1, OUT.CANCEL_MKT_DATA: 1, OUT.REQ_HISTORICAL_DATA: 0,
                 OUT.CANCEL_HISTORICAL_DATA: 1, OUT.REQ_CONTRACT_DATA: 1, OUT.REQ_EXECUTIONS: 1,
                 OUT.REQ_ACCOUNT_SUMMARY: 1, OUT.CANCEL_ACCOUNT_SUMMARY: 1, OUT.REQ_ACCOUNT_UPDATES_MULTI: 1,
                 OUT.REQ_PNL: 0, OUT.REQ_PNL_SINGLE: 0, OUT.REQ_TICK_BY_TICK_DATA: 0,
                 OUT.CANCEL_TICK_BY_TICK_DATA: 0, OUT.PLACE_ORDER: 0, OUT.CANCEL_ORDER: 1}


@dataclass(frozen=True)
class ConnectionEvents:
    """What a connection tells the gateway. ``refusing()``: True while new sockets are to be dropped
    (a fault); ``opened(conn)`` once the socket is accepted; ``started(conn, client_id,
    capabilities)`` at START_API; ``request(conn, msg_id, fields)`` for every admitted request
    after it (fields positioned after the message id); ``closed(conn)`` once the socket is gone."""

    refusing: Callable[[], bool]
    opened: Callable[["ClientConnection"], None]
    started: Callable[["ClientConnection", int, str], None]
    request: Callable[["ClientConnection", int, wire.Fields], None]
    closed: Callable[["ClientConnection"], None]


class ClientConnection(asyncio.Protocol):
    """The TWS side of one API socket."""

    def __init__(self, events: ConnectionEvents):
        self.events = events
        self.transport: asyncio.Transport | None = None
        self.prefix = b""              # the first bytes, until API\0 is checked
        self.framer = Framer()
        self.state = "prefix"          # prefix -> version -> started -> closed
        self.client_id: int | None = None
        self.client_version = 0        # negotiated server version for this client
        self.options = ""
        self.peer = ""
        self.rate_window: collections.deque[float] = collections.deque()
        self.max_rate = MAX_MESSAGES_PER_SECOND
        self.market_data_type = LIVE
        self.out: list[bytes] = []     # coalesced writes, flushed once per loop turn
        self._flush_scheduled = False
        self.messages_in = 0
        self.messages_out = 0
        self._drain_waiter: asyncio.Future | None = None   # set while the socket's buffer is full

    # --- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        if self.events.refusing():
            log.info("refusing connection from %s (fault: refuse connections)", self.peer)
            transport.abort()
            self.state = "closed"
            return
        self.events.opened(self)

    def connection_lost(self, exc):
        self.state = "closed"
        self.resume_writing()
        self.events.closed(self)

    def data_received(self, data: bytes):
        if self.state == "closed":
            return
        try:
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
            for payload in self.framer.messages():
                if self.state == "version":
                    self._handshake(payload)
                elif self.state == "started" or self.state == "awaiting_start":
                    self._on_message(payload)
                if self.state == "closed":
                    return
        except ProtocolError as exc:
            log.warning("client %s sent a malformed stream (%s); closing", self.peer, exc)
            self.close()

    # --- handshake --------------------------------------------------------------------------------
    def _handshake(self, payload: bytes) -> None:
        low, high, self.options = parse_version_range(payload)
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
        msg_id = fields.next_int("message id")
        self.messages_in += 1
        if self.state == "awaiting_start":
            if msg_id != OUT.START_API:
                log.warning("client %s sent message %d before START_API; ignored", self.peer, msg_id)
                return
            fields.next_int("version")
            client_id = fields.next_int("clientId", default=0)
            capabilities = fields.next_str("optionalCapabilities") if fields.remaining() else ""
            self.events.started(self, client_id, capabilities)
            return
        if not self._admit_rate(msg_id, fields):
            return
        self.events.request(self, msg_id, fields)

    def _admit_rate(self, msg_id: int, fields: wire.Fields) -> bool:
        """IB's 50 messages per second: beyond it the message is refused with error 100."""
        now = time.monotonic()
        window = self.rate_window
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= self.max_rate:
            req_id = -1
            idx = _REQ_ID_INDEX.get(msg_id)
            if idx is not None and idx < len(fields.items) - 1:
                try:
                    req_id = int(fields.items[1 + idx])
                except ValueError:
                    req_id = -1
            self.send_error(req_id, errors.MAX_RATE_EXCEEDED,
                            f"Max rate of messages per second has been exceeded:max={self.max_rate} "
                            f"rec={len(window) + 1} (1)")
            return False
        window.append(now)
        return True

    # --- outbound ---------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Queue one encoded frame; frames queued in one loop turn go out in one socket write."""
        if self.state == "closed" or self.transport is None:
            return
        self.out.append(data)
        self.messages_out += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def send_error(self, req_id: int, code: int, text: str) -> None:
        """Send IB's error ``code`` with ``text`` for ``req_id`` (-1: not about a request)."""
        self.send(messages.error(req_id, code, text))

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
        self.out.clear()

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
        self.state = "closed"
        if self.transport is not None:
            self.transport.abort()

    def __repr__(self):
        return f"<client {self.client_id} {self.peer} {self.state}>"
