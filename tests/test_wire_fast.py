"""addin.ib.fast_reader against ibapi's own decoding, no mocks of the IB side.

Every payload goes through two paths: ibapi's (``EClient.run``'s body: msgId split, ``read_fields``,
``Decoder.interpret``) and ours (``FastClient._process``: fast decoder or ibapi's interpret). Both
record the wrapper calls they make; the sequences must be equal: callback names, argument values
and types (TickAttrib / BarData compared attribute by attribute), and the exception raised, if any.
Framing is checked across arbitrary recv() boundaries, and ``FastClient.run`` over a real socket
pair with a partial frame at the close.
"""

from __future__ import annotations

import math
import socket
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ibapi import comm
from ibapi.client import EClient
from ibapi.connection import Connection
from ibapi.decoder import Decoder
from ibapi.ticktype import TickTypeEnum
from ibapi.wrapper import EWrapper

from addin.ib.fast_reader import FastClient, FastDecoder
from addin.protocol.framing import Framer

SERVER_VERSION = 178
CAPTURES = Path(__file__).resolve().parent / "data" / "captures"    # real TWS messages, with provenance


def _norm(value, depth: int = 0):
    """A comparable form: objects as (type, attributes), floats with NaN equal to itself."""
    if depth > 6:
        return (type(value).__name__, repr(value))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_norm(v, depth + 1) for v in value))
    if hasattr(value, "__dict__"):      # TickAttrib, BarData, Contract, Order, ...
        return (type(value).__name__, tuple((k, _norm(v, depth + 1)) for k, v in vars(value).items()))
    if (isinstance(value, float) and math.isnan(value)) or (isinstance(value, Decimal) and value.is_nan()):
        return (type(value).__name__, "nan")
    return (type(value).__name__, value)


class _Recorder(EWrapper):
    """Records every callback (any EWrapper method) as (name, normalised args)."""

    def __init__(self):
        super().__init__()
        self.calls: list = []

    def __getattribute__(self, name):
        if not name.startswith("_") and name not in ("calls",) and hasattr(EWrapper, name) \
                and callable(getattr(EWrapper, name)):
            calls = object.__getattribute__(self, "calls")
            return lambda *args: calls.append((name, tuple(_norm(a) for a in args)))
        return object.__getattribute__(self, name)


class _BatchRecorder(_Recorder):
    """A wrapper with the batch callback: rows are expanded to BarData for the comparison."""

    def historicalDataBatch(self, req_id, rows):
        from addin.ib.fast_reader import bar_from_row
        for row in rows:
            self.calls.append(("historicalData", (_norm(req_id), _norm(bar_from_row(row)))))


def _ibapi(payload: bytes, version: int = SERVER_VERSION):
    wrapper = _Recorder()
    decoder = Decoder(wrapper, version)
    try:
        cut = payload.index(b"\0")
        msg_id = int(payload[:cut])
        decoder.interpret(comm.read_fields(payload[cut + 1:]), msg_id)
        error = None
    except Exception as exc:  # the outcome compared, whatever it is
        error = type(exc)
    return wrapper.calls, error


def _ours(payload: bytes, version: int = SERVER_VERSION, wrapper=None):
    wrapper = wrapper or _Recorder()
    client = FastClient(wrapper)
    client.decoder = Decoder(wrapper, version)
    fast = FastDecoder(wrapper, version)
    try:
        client._process(payload, fast, False)
        error = None
    except Exception as exc:
        error = type(exc)
    return wrapper.calls, error


def _payload(msg_id: int, fields) -> bytes:
    return b"".join(str(f).encode() + b"\0" for f in (msg_id, *fields))


# --- value strategies: the ordinary and the odd texts IB (or a broken peer) may send ---------------
ints = st.one_of(st.integers(-5, 100_000_000).map(str), st.sampled_from(["", "x", "1.5", " 7"]))
tick_types = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 9, 14, 45, 66, 67, 68, 88, -1, 111]).map(str),
                       st.sampled_from(["", "z"]))
prices = st.one_of(st.floats(allow_nan=True, allow_infinity=False).map(repr),
                   st.sampled_from(["", "-1", "Infinity", "1.7976931348623157E308", "0.0001", "abc"]))
sizes = st.one_of(st.integers(0, 10**9).map(str), st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
                  st.sampled_from(["", "2147483647", "9223372036854775807", "1.7976931348623157E308",
                                   "-9223372036854775808", "q", "NaN"]))
texts = st.one_of(st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), max_size=12),
                  st.sampled_from(["1700000000", "a\\nb", "1.5", ""]))


def _same(payload: bytes, version: int = SERVER_VERSION):
    expected = _ibapi(payload, version)
    assert _ours(payload, version) == expected, payload


@settings(max_examples=400, deadline=None)
@given(ints, ints, tick_types, prices, sizes, st.one_of(st.integers(0, 7).map(str), st.just("")),
       st.integers(0, 2))
def test_tick_price_matches_ibapi(version, req_id, tick_type, price, size, mask, drop):
    fields = [version, req_id, tick_type, price, size, mask][: 6 - drop]
    _same(_payload(1, fields))


class _PriceSizeRecorder(_Recorder):
    """A wrapper taking whole TICK_PRICEs: recorded as the tickPrice + tickSize ibapi would make
    (the attrib left out: the combined path does not carry it)."""

    def price_size_tick(self, req_id, tick_type, price, size_type, size):
        self.calls.append(("tickPrice", (_norm(req_id), _norm(tick_type), _norm(price))))
        if size_type != TickTypeEnum.NOT_SET:
            self.calls.append(("tickSize", (_norm(req_id), _norm(size_type), _norm(size))))
        return True


@settings(max_examples=400, deadline=None)
@given(ints, ints, tick_types, prices, sizes, st.one_of(st.integers(0, 7).map(str), st.just("")),
       st.integers(0, 2))
def test_a_whole_tick_price_carries_what_ibapis_two_calls_carry(version, req_id, tick_type, price, size, mask, drop):
    payload = _payload(1, [version, req_id, tick_type, price, size, mask][: 6 - drop])
    calls, error = _ibapi(payload)
    without_attrib = [(name, args[:3]) if name == "tickPrice" else (name, args) for name, args in calls]
    assert _ours(payload, wrapper=_PriceSizeRecorder()) == (without_attrib, error), payload


@settings(max_examples=200, deadline=None)
@given(ints, ints, tick_types, sizes, st.integers(0, 1))
def test_tick_size_matches_ibapi(version, req_id, tick_type, size, drop):
    _same(_payload(2, [version, req_id, tick_type, size][: 4 - drop]))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([1, 45, 46]), ints, tick_types, st.one_of(prices, texts), st.integers(-1, 1))
def test_tick_string_and_generic_match_ibapi(msg_id, req_id, tick_type, value, extra):
    fields = ["6", req_id, tick_type, value] + (["more"] if extra > 0 else [])
    if extra < 0:
        fields.pop()
    _same(_payload(msg_id if msg_id != 1 else 45, fields))
    _same(_payload(46, fields))


def test_tick_price_versions_before_178_match_ibapi():
    for version in (100, 110, 140, 176):
        for mask in ("0", "1", "3", "7"):
            _same(_payload(1, ["6", "5", "1", "1.25", "300", mask]), version)


bars = st.tuples(st.sampled_from(["20250102 09:30:00", "1735811400", "20250102", "ü"]),
                 prices, prices, prices, prices, sizes, sizes, ints)


@settings(max_examples=150, deadline=None)
@given(ints, st.lists(bars, max_size=6), st.integers(-1, 2), st.booleans())
def test_historical_data_matches_ibapi(req_id, rows, count_delta, batch):
    count = max(0, len(rows) + count_delta)
    fields = [req_id, "20250101 00:00:00", "20250102 00:00:00", count] + [v for row in rows for v in row]
    payload = _payload(17, fields)
    expected = _ibapi(payload)
    got = _ours(payload, wrapper=_BatchRecorder() if batch else None)
    assert got == expected


@settings(max_examples=150, deadline=None)
@given(ints, ints, st.sampled_from(["20250102 09:30:00", "1735811400"]), prices, prices, prices, prices,
       sizes, sizes, st.integers(0, 2))
def test_historical_data_update_matches_ibapi(req_id, count, date, o, c, h, lo, wap, volume, drop):
    fields = [req_id, count, date, o, c, h, lo, wap, volume]
    _same(_payload(90, fields[: len(fields) - drop]))


def test_historical_data_at_later_server_version_matches_ibapi():
    fields = ["7", "2", "20250102 09:30:00", "1", "2", "0.5", "1.5", "10", "1.2", "3",
              "20250102 09:31:00", "1.5", "2.5", "1", "2", "-1", "-1", "4"]
    for version in (120, 178, 196, 200):
        _same(_payload(17, fields), version)


def _captures():
    files = sorted(CAPTURES.glob("*.txt"))
    assert files, f"no captures at {CAPTURES}"
    return files


@pytest.mark.parametrize("path", _captures(), ids=lambda p: p.name)
def test_real_tws_messages_decode_as_ibapi(path):
    payload = path.read_text().strip().encode().decode("unicode_escape").encode("latin-1")
    expected = _ibapi(payload)      # some captures are not of version 178: ibapi may raise; so must we
    assert _ours(payload) == expected


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=20), st.data())
def test_framing_across_any_recv_boundaries(payloads, data):
    stream = b"".join(_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    framer = Framer()
    got = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        framer.feed(stream[a:b])
        got.extend(framer.messages())
    assert got == payloads
    assert framer.pending == 0


def test_framer_keeps_a_partial_frame():
    framer = Framer()
    framer.feed(_frame(b"1\x00a\x00") + _frame(b"2\x00bb\x00")[:5])
    assert list(framer.messages()) == [b"1\x00a\x00"]
    assert framer.pending == 5


def _socket_client(wrapper):
    """A FastClient "connected" over one end of a real socket pair (the handshake done by hand)."""
    ours, theirs = socket.socketpair()
    ours.settimeout(1)
    client = FastClient(wrapper)
    client.conn = Connection("socketpair", 0)
    client.conn.socket = ours
    client.serverVersion_ = SERVER_VERSION
    client.decoder = Decoder(wrapper, SERVER_VERSION)
    client.fast = FastDecoder(wrapper, SERVER_VERSION)
    client.setConnState(EClient.CONNECTED)
    return client, theirs


def test_run_delivers_in_order_and_drops_a_partial_frame_at_close():
    wrapper = _Recorder()
    client, theirs = _socket_client(wrapper)
    messages = [_payload(1, ["6", "7", "1", "101.25", "300", "1"]),
                _payload(4, ["2", "7", "354", "Requested market data is not subscribed", ""]),
                _payload(2, ["6", "7", "8", "12345"]),
                _payload(46, ["6", "7", "45", "1700000000"])]
    stream = b"".join(_frame(m) for m in messages) + _frame(_payload(2, ["6", "7", "0", "5"]))[:9]
    thread = threading.Thread(target=client.run, daemon=True)
    thread.start()
    for i in range(0, len(stream), 7):           # arrives in small pieces
        theirs.sendall(stream[i:i + 7])
    theirs.close()
    thread.join(10)
    assert not thread.is_alive()
    expected = []
    for m in messages:
        expected += _ibapi(m)[0]
    assert wrapper.calls == expected + [("connectionClosed", ())]
    assert [c[0] for c in wrapper.calls] == ["tickPrice", "tickSize", "error", "tickSize", "tickString",
                                             "connectionClosed"]
    assert not client.isConnected()


def test_run_ends_with_connection_closed_on_shutdown_from_another_thread():
    wrapper = _Recorder()
    client, theirs = _socket_client(wrapper)
    thread = threading.Thread(target=client.run, daemon=True)
    thread.start()
    theirs.sendall(_frame(_payload(2, ["6", "3", "0", "10"])))
    client.conn.socket.shutdown(socket.SHUT_RDWR)   # what Session._shutdown_socket does
    thread.join(10)
    assert not thread.is_alive()
    assert wrapper.calls[-1] == ("connectionClosed", ())
    theirs.close()


def test_decimal_sizes_are_ibapis_values():
    fast = FastDecoder(_Recorder(), SERVER_VERSION)
    assert fast.decimal(b"100") == Decimal("100") and type(fast.decimal(b"100")) is Decimal
    assert fast.decimal(b"") is fast.decimal(b"2147483647")
