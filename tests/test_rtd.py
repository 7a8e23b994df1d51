"""The RTD server (``addin.service.rtd``) driven through its IRtdServer methods, as Excel drives it, with
a recording callback, against a real ibxl service (in this process) and the paper gateway.

Counted from the outside: UpdateNotify calls and their times (the recorder), the values RefreshData
hands Excel compared with the service's pushed board, and the market data lines at the gateway.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from datetime import datetime

import pytest
from click.testing import CliRunner

from addin.app.runtime import Runtime
from addin.config import Settings
from addin.market.quote_fields import QuoteFailed, QuoteWaiting, field_attr, quote_value
from addin.paper import PaperGateway
from addin.service.client import ServiceClient
from addin.service.rtd import DISCONNECTED_TEXT, WAITING, RtdServer, cell_value, excel_serial
from addin.service.server import embedded_service

from .test_service import wait_until

CLIENT_ID = 47
INTERVAL = 0.25


@pytest.fixture(scope="module")
def gw():
    # speed 20: the replayed market moves 20 s per second, so quotes change at every 50 ms stream pass
    with PaperGateway(port=0, synthetic=100, max_lines=200, stream_interval=0.05, speed=20,
                      account_interval=5.0) as g:
        yield g


@pytest.fixture(scope="module")
def service(gw, tmp_path_factory):
    journal = tmp_path_factory.mktemp("rtd") / "journal.sqlite3"
    with embedded_service(lambda: Runtime("127.0.0.1", gw.port, CLIENT_ID, settings=Settings(),
                                          journal_path=journal)) as server:
        yield server


def gateway_lines(gw) -> int:
    return gw.call(lambda s: s.marketdata.lines_in_use(s.clients[CLIENT_ID]) if CLIENT_ID in s.clients else -1)


def rtd_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("ibxl-rtd")]


class Recorder:
    """Excel's IRTDUpdateEvent: counts UpdateNotify calls with their times."""

    def __init__(self):
        self.times: list[float] = []
        self._cond = threading.Condition()

    def UpdateNotify(self):
        with self._cond:
            self.times.append(time.monotonic())
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.times) >= count, timeout)


class Excel:
    """What Excel holds per topic: the value from ConnectData, then from each RefreshData."""

    def __init__(self, server: RtdServer, recorder: Recorder):
        self.server, self.recorder, self.cells = server, recorder, {}
        self.seen = 0                                       # notifications Excel has acted on

    def notified(self, timeout: float) -> bool:
        """Wait for an UpdateNotify Excel has not acted on yet."""
        ok = self.recorder.wait_for(self.seen + 1, timeout)
        self.seen = len(self.recorder.times)
        return ok

    def connect(self, tid: int, *strings):
        self.cells[tid] = self.server.ConnectData(tid, strings, True)
        return self.cells[tid]

    def refresh(self) -> dict:
        count, (ids, values) = self.server.RefreshData()
        assert count == len(ids) == len(values) == len(set(ids))
        out = dict(zip(ids, values))
        for tid, value in out.items():
            assert tid in self.cells, f"topic {tid} was never connected"
            assert value != self.cells[tid] or type(value) is not type(self.cells[tid]), \
                f"topic {tid} reported with an unchanged value {value!r}"
            self.cells[tid] = value
        return out

    def settle(self, predicate, timeout: float, what: str):
        """RefreshData after each UpdateNotify until ``predicate(cells)`` holds."""
        deadline = time.monotonic() + timeout
        while not predicate(self.cells):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}: {self.cells}")
            self.notified(left)
            self.refresh()


def expected(board, key: str, attr: str):
    q = board.get(key)
    try:
        return cell_value(quote_value(q, attr))
    except QuoteFailed as exc:
        return f"#{exc}"
    except QuoteWaiting:
        return WAITING


def test_100_topics_notify_once_per_interval_and_refresh_returns_exactly_the_changed_values(gw, service):
    base = gateway_lines(gw)
    recorder = Recorder()
    rtd = RtdServer(service.address, service.authkey, refresh_interval=INTERVAL)
    excel = Excel(rtd, recorder)
    assert rtd.ServerStart(recorder) == 1
    try:
        texts = [f"SIM{k:04d}" for k in range(1, 51)]
        topics = {}                                         # topic id -> (text, attr)
        for i, text in enumerate(texts):
            for j, name in enumerate(("bid", "ask")):
                tid = 1 + 2 * i + j
                topics[tid] = (text, name)
                first = excel.connect(tid, text, name)
                assert first == WAITING, first              # nothing on the board yet: never waits for IB
        assert len(topics) == 100
        wait_until(lambda: gateway_lines(gw) == base + 50, 10, "one line per instrument, not per topic")
        excel.settle(lambda cells: all(isinstance(v, float) for v in cells.values()), 10, "100 prices")
        assert rtd.Heartbeat() == 1

        # Ticks keep coming; Excel refreshes after each notification, as it does.
        board = rtd.client.board
        keys = {text: rtd.key_of(text) for text in texts}
        excel.refresh()
        start_notes = len(recorder.times)
        start_version, start = board.version, time.monotonic()
        refreshes = 0
        while time.monotonic() - start < 2.0:
            assert excel.notified(2.0), "no UpdateNotify while quotes tick"
            before = board.version
            changed = excel.refresh()
            refreshes += 1
            _, moved = board.changes_since(before)          # pushes during RefreshData are excused
            for tid, (text, name) in topics.items():
                if keys[text] not in moved:
                    assert excel.cells[tid] == expected(board, keys[text], field_attr(name)), (tid, text, name)
            assert all(isinstance(v, float) for v in changed.values())
        ticks = board.version - start_version
        notes = recorder.times[start_notes:]
        gaps = [b - a for a, b in zip(recorder.times, recorder.times[1:])]     # every call since ServerStart
        assert len(notes) >= 4 and min(gaps) >= INTERVAL - 0.02, gaps
        assert len(notes) <= 2.0 / INTERVAL + 2
        assert ticks > 10 * len(notes), (ticks, len(notes))
        print(f"\n{ticks} quote changes pushed in {time.monotonic() - start:.1f} s -> {len(notes)} "
              f"UpdateNotify (min gap {min(gaps) * 1000:.0f} ms), {refreshes} RefreshData")

        # Until Excel calls RefreshData, no second notification (however many ticks arrive).
        assert excel.notified(2.0)
        n, v = len(recorder.times), board.version
        time.sleep(1.0)                                     # the absence of a call: nothing to wait on
        assert len(recorder.times) == n and board.version > v + 50
        excel.refresh()

        # A new topic on an instrument the board already has: its value at once, no new line.
        assert isinstance(excel.connect(101, "SIM0002", "last size"), float)
        assert gateway_lines(gw) == base + 50

        # The line goes with the last topic of its instrument.
        rtd.DisconnectData(1)                               # SIM0001 bid
        time.sleep(0.3)                                     # the absence of a release: nothing to wait on
        assert gateway_lines(gw) == base + 50
        rtd.DisconnectData(2)                               # SIM0001 ask
        wait_until(lambda: gateway_lines(gw) == base + 49, 5, "SIM0001's line released")
        for tid in range(3, 21):                            # SIM0002..SIM0010, bid and ask
            rtd.DisconnectData(tid)
        wait_until(lambda: gateway_lines(gw) == base + 41, 5, "SIM0003..SIM0010 released, SIM0002 kept")
        assert 1 not in excel.refresh()                     # a disconnected topic is never reported
    finally:
        rtd.ServerTerminate()
    wait_until(lambda: gateway_lines(gw) == base, 5, "every line released by ServerTerminate")
    assert rtd.Heartbeat() == 0
    wait_until(lambda: not rtd_threads(), 5, "the RTD server's threads gone")


def test_an_unknown_instrument_and_a_bad_field_show_their_error_text(gw, service):
    base = gateway_lines(gw)
    recorder = Recorder()
    rtd = RtdServer(service.address, service.authkey, refresh_interval=INTERVAL)
    excel = Excel(rtd, recorder)
    rtd.ServerStart(recorder)
    try:
        assert excel.connect(1, "ZZZZNOPE", "bid") == WAITING
        bad_field = excel.connect(2, "SIM0070", "colour")
        assert bad_field.startswith("#IBXL: RTD field: 'colour' is not one of") and "bid" in bad_field
        assert excel.connect(3) .startswith("#IBXL: RTD topic: no instrument")
        excel.connect(4, "SIM0071")                         # the field defaults to price
        excel.settle(lambda c: c[1] != WAITING and isinstance(c[4], float), 10, "the unknown instrument's error")
        assert excel.cells[1].startswith("#IB 200: "), excel.cells[1]
        assert gateway_lines(gw) == base + 1                # SIM0071 only
    finally:
        rtd.ServerTerminate()
    wait_until(lambda: gateway_lines(gw) == base, 5, "SIM0071 released")


def test_text_from_ib_starting_with_equals_comes_back_as_text_not_a_formula(gw, service):
    """RTD values are values: Excel shows an RTD string as it is and never evaluates it. A text field IB
    controls (the data type IB reports for a line) that starts with "=" comes back as that same text."""
    recorder = Recorder()
    rtd = RtdServer(service.address, service.authkey, refresh_interval=INTERVAL)
    excel = Excel(rtd, recorder)
    rtd.ServerStart(recorder)
    try:
        excel.connect(1, "SIM0080", "bid")
        excel.connect(2, "SIM0080", "data type")
        excel.settle(lambda c: isinstance(c[1], float), 10, "SIM0080's bid")
        key = rtd.key_of("SIM0080")
        service.runtime.market.board.mark(key, data_type="=HYPERLINK(\"http://x\",\"click\")")   # as IB sent it
        excel.settle(lambda c: c[2] != "live", 5, "the data type pushed")
        assert excel.cells[2] == "=HYPERLINK(\"http://x\",\"click\")" and type(excel.cells[2]) is str
    finally:
        service.runtime.market.board.mark(rtd.key_of("SIM0080"), data_type="live")
        rtd.ServerTerminate()


def test_the_users_disconnect_shows_in_every_topic_and_connect_brings_prices_back(gw, service):
    recorder = Recorder()
    rtd = RtdServer(service.address, service.authkey, refresh_interval=INTERVAL)
    excel = Excel(rtd, recorder)
    rtd.ServerStart(recorder)
    user = ServiceClient(service.address, service.authkey, name="the Disconnect button")
    try:
        for tid, text in enumerate(("SIM0090", "SIM0091", "SIM0092"), start=1):
            excel.connect(tid, text, "ask")
        excel.settle(lambda c: all(isinstance(v, float) for v in c.values()), 10, "three prices")
        user.disconnect()
        excel.settle(lambda c: all(v == DISCONNECTED_TEXT for v in c.values()), 5, "disconnected in every topic")
        assert excel.connect(4, "SIM0093", "bid") == DISCONNECTED_TEXT       # a new topic says so too
        assert rtd.Heartbeat() == 1                          # the service connection itself lives
        user.connect()
        excel.settle(lambda c: all(isinstance(v, float) for v in c.values()), 10, "prices after Connect")
    finally:
        if user.user_disconnected:
            user.connect()
        user.close()
        rtd.ServerTerminate()


def test_a_service_that_stops_shows_in_the_topics_and_heartbeat_fails(gw, tmp_path):
    recorder = Recorder()
    with embedded_service(lambda: Runtime("127.0.0.1", gw.port, CLIENT_ID + 1, settings=Settings(),
                                          journal_path=tmp_path / "j.sqlite3")) as short_lived:
        rtd = RtdServer(short_lived.address, short_lived.authkey, refresh_interval=INTERVAL)
        excel = Excel(rtd, recorder)
        rtd.ServerStart(recorder)
        excel.connect(1, "SIM0095", "bid")
        excel.settle(lambda c: isinstance(c[1], float), 10, "SIM0095's bid")
        assert rtd.Heartbeat() == 1
    try:
        excel.settle(lambda c: c[1] == "#IBXL: the ibxl service closed the connection", 5, "the service gone")
        assert rtd.Heartbeat() == 0
    finally:
        rtd.ServerTerminate()


def test_no_service_shows_in_the_topics_and_heartbeat_fails(tmp_path):
    recorder = Recorder()
    rtd = RtdServer(tmp_path / "none.sock", b"k" * 32, refresh_interval=INTERVAL)
    excel = Excel(rtd, recorder)
    rtd.ServerStart(recorder)
    try:
        excel.connect(1, "AAPL", "bid")
        excel.settle(lambda c: c[1] != WAITING, 5, "the failure")
        assert excel.cells[1].startswith("#IBXL: no ibxl service"), excel.cells[1]
        assert rtd.Heartbeat() == 0
    finally:
        rtd.ServerTerminate()


def test_cell_values_are_numbers_text_or_excel_dates():
    assert cell_value(None) == "" and cell_value(3) == 3.0 and cell_value(True) is True
    assert excel_serial(datetime(1900, 1, 1)) == 2.0 and cell_value(datetime(2026, 1, 2, 12)) == 46024.5
    assert not any(isinstance(cell_value(v), float) and math.isnan(cell_value(v)) for v in (None, 1.5))


def test_the_com_module_imports_without_pywin32_and_names_the_registry_keys():
    from addin.service import rtd_com
    assert rtd_com.PROGID == "ibxl.rtd"
    entries = rtd_com.registry_entries(r"C:\py\pythonw.exe", r"C:\py\Lib\win32com\server\localserver.py", r"C:\ibxl")
    keys = {k: v for k, name, v in entries if name is None}
    clsid = rf"Software\Classes\CLSID\{rtd_com.CLSID}"
    assert keys[r"Software\Classes\ibxl.rtd\CLSID"] == rtd_com.CLSID
    assert keys[clsid + r"\PythonCOM"] == "addin.service.rtd_com.IbxlRtdServer"
    assert keys[clsid + r"\LocalServer32"].endswith(f"localserver.py\" {rtd_com.CLSID}")
    assert keys[clsid + r"\PythonCOMPath"] == r"C:\ibxl"
    cls = rtd_com.IbxlRtdServer
    assert set(cls._public_methods_) == {"ServerStart", "ConnectData", "RefreshData", "DisconnectData",
                                         "Heartbeat", "ServerTerminate"}
    assert cls._reg_progid_ == "ibxl.rtd" and cls._reg_clsid_ == rtd_com.CLSID


@pytest.mark.skipif(sys.platform == "win32", reason="the message for Linux and macOS")
def test_ibxl_excel_install_needs_windows_and_says_so():
    from addin.app.cli import main
    for command in ("install", "uninstall"):
        result = CliRunner().invoke(main, ["excel", command])
        assert result.exit_code != 0
        assert "Windows Excel" in result.output and "recalculation" in result.output, result.output
