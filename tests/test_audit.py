"""The orders' audit trail as a user meets it: a real OrderDesk places, modifies and fills orders on the
paper gateway, then ``audit_frame``, the ``ibxl journal`` console script and the ``refresh_audit`` macro
(into a copy of the template, read back with openpyxl) tell that story, newest first, in the zone asked
for. No sleeps: every wait is on the desk's order events."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import openpyxl
import pandas as pd
import pytest

from addin.account.portfolio import Portfolio
from addin.app.jobs import TEMPLATE
from addin.app.macros import refresh_audit
from addin.app.runtime import Runtime
from addin.config import Settings
from addin.excel import layout
from addin.excel.openpyxl_book import OpenpyxlBook
from addin.ib.contracts import ContractBook
from addin.ib.session import Session
from addin.market.quotes import MarketData
from addin.orders.audit import AUDIT_COLUMNS, audit_frame
from addin.orders.desk import OrderDesk
from addin.orders.journal import Journal
from addin.orders.refs import Owner
from addin.paper import PaperGateway

from .test_paper_cli import ibxl_command

TOKYO = ZoneInfo("Asia/Tokyo")
ROOMY = replace(Settings().risk, max_quantity=1_000, max_notional=2_000_000, max_position=100_000,
                max_open_orders=1_000, max_orders_per_minute=1_000, daily_loss_limit=1_000_000)


class Events:
    """The desk's listener: the latest outputs per Ref, with a condition to wait on."""

    def __init__(self, desk: OrderDesk):
        self.cond = threading.Condition()
        self.latest: dict[str, dict] = {}
        desk.add_listener(self.on)

    def on(self, ref, outputs):
        with self.cond:
            self.latest[ref] = outputs
            self.cond.notify_all()

    def wait(self, pred, timeout=15.0):
        with self.cond:
            assert self.cond.wait_for(lambda: pred(self.latest), timeout), f"timed out; saw {self.latest}"


class Story:
    """What the module's orders did: AUD-1 rested as a LMT below the market, was modified to cross it
    and filled; AUD-B is a bracket whose entry rests (then cancelled)."""

    def __init__(self, journal_path, low, high, take_profit, desk):
        self.journal_path, self.low, self.high, self.take_profit, self.desk = journal_path, low, high, take_profit, desk


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def story(gw, tmp_path_factory):
    journal_path = tmp_path_factory.mktemp("audit") / "journal.sqlite3"
    session = Session(port=gw.port, client_id=611, backoff_min=0.05, backoff_max=0.5)
    session.connect()
    contracts = ContractBook(session)
    market, portfolio = MarketData(session, contracts), Portfolio(session)
    desk = OrderDesk(session, contracts, market, portfolio, Settings(risk=ROOMY), journal_path)
    events = Events(desk)
    try:
        q = market.snapshot("AAPL")
        low = round(q.bid * 0.97, 2)                     # rests: inside the 5% band, under the bid
        row = {"Ref": "AUD-1", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1, "OrderType": "LMT",
               "LimitPrice": low, "TIF": "DAY"}
        assert desk.place(pd.DataFrame([row])).loc[0, "Status"] == "Submitted"
        high = round(market.snapshot("AAPL").ask * 1.01, 2)     # crosses the ask: fills at the touch
        result = desk.modify(dict(row, LimitPrice=high))
        assert result["Message"] is None or not result["Message"].startswith("not modified"), result
        events.wait(lambda seen: (seen.get("AUD-1") or {}).get("Commission") is not None)
        assert desk.order("AUD-1")["Status"] == "Filled"
        bid = market.snapshot("AAPL").bid               # every price of the bracket inside the 5% band
        bracket = {"Ref": "AUD-B", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1, "OrderType": "LMT",
                   "LimitPrice": round(bid * 0.98, 2), "TakeProfit": round(bid * 1.01, 2),
                   "StopLoss": round(bid * 0.96, 2)}
        out = desk.place(pd.DataFrame([bracket]))
        assert out.loc[0, "Status"] == "Submitted", out.loc[0].to_dict()
        assert desk.cancel(["AUD-B"]).loc["AUD-B", "Status"] == "Cancelled"
        # the children go with their parent: wait for their last status, so the journal holds still
        events.wait(lambda seen: all(desk.order(r)["Status"] == "Cancelled" for r in ("AUD-B.TP", "AUD-B.SL")))
        yield Story(journal_path, low, high, bracket["TakeProfit"], desk)
    finally:
        desk.close()
        portfolio.close()
        market.close()
        session.disconnect()


def run_journal(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(ibxl_command() + ["journal", *args], capture_output=True, text=True, timeout=120, env=env)


def chronological(frame: pd.DataFrame) -> list[str]:
    return list(reversed(frame["Event"].tolist()))


def in_order(seq: list[str], wanted: list[str]) -> bool:
    """Whether ``wanted`` appears in ``seq`` in that order (other items between allowed)."""
    it = iter(seq)
    return all(any(x == w for x in it) for w in wanted)


# --- audit_frame --------------------------------------------------------------------------------------
def test_a_place_modify_fill_cycle_reads_newest_first_in_the_zone_asked(story):
    journal = story.desk.journal
    frame = audit_frame(journal, ref="aud-1", tz="Asia/Tokyo")      # Refs compare in any case
    assert list(frame.columns) == list(AUDIT_COLUMNS) == layout.AUDIT_COLUMNS
    assert set(frame["Ref"]) == {"AUD-1"}
    events = chronological(frame)
    assert in_order(events, ["intent", "place", "status", "modify", "fill", "commission"]), events
    assert events.count("intent") == events.count("place") == events.count("modify") == 1
    assert events.count("fill") == events.count("commission") == 1
    times = frame["Time"].tolist()
    assert all(a >= b for a, b in zip(times, times[1:])), times                   # newest first
    assert str(frame["Time"].dt.tz) == "Asia/Tokyo"
    rec = journal.intent("AUD-1")
    intent = frame[frame["Event"] == "intent"].iloc[0]
    assert intent["Time"] == datetime.fromisoformat(rec["created"]).astimezone(TOKYO)
    assert intent["Detail"] == f"BUY 1 LMT {story.low:g} DAY" and intent["Price"] == story.low   # as asked
    place = frame[frame["Event"] == "place"].iloc[0]
    assert place["OrderId"] == rec["order_id"] and place["Price"] == story.low
    modify = frame[frame["Event"] == "modify"].iloc[0]
    assert modify["Detail"] == f"LimitPrice {story.low:g} -> {story.high:g}" and modify["Price"] == story.high
    assert modify["OrderId"] == rec["order_id"]                                 # a modify keeps the order id
    fill = frame[frame["Event"] == "fill"].iloc[0]
    execution = journal.fills("AUD-1")[0]
    assert fill["Detail"] == f"BOT 1 @ {execution['price']:g} execId {execution['exec_id']}"
    assert (fill["Action"], fill["Quantity"], fill["Price"]) == ("BUY", 1, execution["price"])
    assert fill["PermId"] == rec["perm_id"] and fill["Price"] <= story.high
    ib_second = datetime.strptime(execution["time"], "%Y%m%d %H:%M:%S UTC").replace(tzinfo=ZoneInfo("UTC"))
    assert ib_second <= fill["Time"] < ib_second + timedelta(seconds=1)          # IB's stamp, to the second
    commission = frame[frame["Event"] == "commission"].iloc[0]
    assert commission["Detail"] == "1.00 USD"                   # IB fixed: 1 x 0.005, minimum 1.00 USD
    statuses = frame[frame["Event"] == "status"]
    assert {"Submitted", "Filled"} <= set(statuses["Status"])
    filled = statuses[statuses["Status"] == "Filled"].iloc[0]
    assert filled["Detail"] == f"Filled filled 1 remaining 0 avg {execution['price']:g}"
    first_submitted = statuses[statuses["Status"] == "Submitted"].iloc[-1]
    assert first_submitted["Detail"] == "Submitted filled 0 remaining 1"


def test_a_ref_brings_its_bracket_children_and_the_whole_journal_holds_every_order(story):
    journal = story.desk.journal
    bracket = audit_frame(journal, ref=" aud-b ")
    assert set(bracket["Ref"]) == {"AUD-B", "AUD-B.TP", "AUD-B.SL"}
    for ref in ("AUD-B", "AUD-B.TP", "AUD-B.SL"):
        mine = chronological(bracket[bracket["Ref"] == ref])
        assert in_order(mine, ["intent", "place", "status"]), (ref, mine)
    assert "cancel" in set(bracket["Event"]) and "Cancelled" in set(bracket["Status"])
    tp = bracket[(bracket["Ref"] == "AUD-B.TP") & (bracket["Event"] == "intent")].iloc[0]
    assert tp["Detail"] == f"SELL 1 LMT {story.take_profit:g} DAY OCA AUD-B.OCA"
    everything = audit_frame(journal, tz="UTC")
    assert {"AUD-1", "AUD-B", "AUD-B.TP", "AUD-B.SL"} == set(everything["Ref"])
    assert len(everything) == len(bracket) + len(audit_frame(journal, ref="AUD-1"))
    with pytest.raises(KeyError, match="NOPE"):
        audit_frame(journal, ref="NOPE")


def test_since_keeps_the_events_at_or_after_it(story):
    journal = story.desk.journal
    frame = audit_frame(journal, ref="AUD-1", tz="Asia/Tokyo")
    modify_time = frame[frame["Event"] == "modify"]["Time"].iloc[0]
    later = audit_frame(journal, ref="AUD-1", since=modify_time.to_pydatetime(), tz="Asia/Tokyo")
    assert "modify" in set(later["Event"]) and not {"intent", "place"} & set(later["Event"])
    assert (later["Time"] >= modify_time).all()
    # a naive datetime is wall time in the zone asked for: the same instant written in Tokyo
    naive = modify_time.tz_localize(None).to_pydatetime()
    assert audit_frame(journal, ref="AUD-1", since=naive, tz="Asia/Tokyo").equals(later)
    day = frame["Time"].min().date()                # a date: its midnight in the zone asked for
    assert len(audit_frame(journal, ref="AUD-1", since=day, tz="Asia/Tokyo")) == len(frame)
    assert audit_frame(journal, ref="AUD-1", since=day + timedelta(days=2), tz="Asia/Tokyo").empty


def test_ibs_execution_time_forms_and_an_unreadable_one(tmp_path):
    """TWS writes execution times with its zone's name, or none (its machine's zone: this one's); an
    unreadable text gives no Time, and the fill keeps its place after the order was sent."""
    with Journal(tmp_path / "journal.sqlite3") as journal:
        owner = Owner.new(1)
        fields = {"ref": "T-1", "action": "BUY", "quantity": 3.0, "order_type": "MKT", "tif": "DAY"}
        journal.record_intents([("T-1", fields, None)], account="DU1", symbol="AAPL", con_id=1, owner=owner)
        journal.claim([("T-1", 9)], 1, owner)
        # An hour after the order was sent (whatever today is), in IB's two forms.
        later = (datetime.now().astimezone() + timedelta(hours=1)).replace(microsecond=0)
        eastern, local = later.astimezone(ZoneInfo("US/Eastern")), later.replace(tzinfo=None)
        for exec_id, text in (("E-1", eastern.strftime("%Y%m%d %H:%M:%S US/Eastern")),
                              ("E-2", local.strftime("%Y%m%d %H:%M:%S")), ("E-3", "not a time")):
            journal.record_fill(exec_id, "T-1", order_id=9, perm_id=5, time_text=text, side="BOT", shares=1,
                                price=10.5)
        frame = audit_frame(journal, tz="Asia/Tokyo")
    assert chronological(frame) == ["intent", "place", "fill", "fill", "fill"]
    fills = {row["Detail"].split("execId ")[1][:3]: row for _, row in frame[frame["Event"] == "fill"].iterrows()}
    assert fills["E-1"]["Time"] == later.astimezone(TOKYO)
    assert fills["E-2"]["Time"] == local.astimezone(TOKYO)                       # this machine's wall time
    assert pd.isna(fills["E-3"]["Time"]) and "'not a time' unreadable" in fills["E-3"]["Detail"]
    assert fills["E-1"]["Detail"] == "BOT 1 @ 10.5 execId E-1" and fills["E-1"]["Action"] == "BUY"


# --- ibxl journal -------------------------------------------------------------------------------------
def test_ibxl_journal_prints_each_step_and_its_csv_reads_back_to_the_same_events(story):
    journal = story.desk.journal
    frame = audit_frame(journal, ref="AUD-1", tz="Asia/Tokyo")
    r = run_journal("--journal", str(story.journal_path), "--ref", "aud-1", "--tz", "Asia/Tokyo")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert f"{len(frame)} events, newest first, times in Asia/Tokyo" in lines[0]
    body = lines[2:]                                       # a title line, the header, then newest first
    assert [next(e for e in ("global_cancel", "commission", "intent", "place", "modify", "status", "fill")
                 if f" {e} " in line) for line in body] == frame["Event"].tolist()
    created = datetime.fromisoformat(journal.intent("AUD-1")["created"]).astimezone(TOKYO)
    assert body[-1].lstrip().startswith(created.strftime("%Y-%m-%d %H:%M:%S"))
    assert f"BUY 1 LMT {story.low:g} DAY" in body[-1]
    assert f"LimitPrice {story.low:g} -> {story.high:g}" in r.stdout and "1.00 USD" in r.stdout

    r = run_journal("--journal", str(story.journal_path), "--ref", "AUD-1", "--tz", "Asia/Tokyo", "--csv")
    assert r.returncode == 0, r.stderr
    back = pd.read_csv(io.StringIO(r.stdout))
    assert list(back.columns) == list(AUDIT_COLUMNS)
    assert back["Event"].tolist() == frame["Event"].tolist()
    assert back["Detail"].tolist() == frame["Detail"].tolist()
    times = pd.to_datetime(back["Time"], utc=True).dt.tz_convert("Asia/Tokyo")
    assert times.tolist() == frame["Time"].tolist()
    assert all(t.utcoffset() == timedelta(hours=9) for t in pd.to_datetime(back["Time"], format="ISO8601"))


def test_ibxl_journal_since_default_path_and_the_whole_journal(story):
    frame = audit_frame(story.desk.journal, ref="AUD-1", tz="Asia/Tokyo")
    modify_time = frame[frame["Event"] == "modify"]["Time"].iloc[0]
    env = {"IBXL_JOURNAL": str(story.journal_path)}        # the default path: $IBXL_JOURNAL
    r = run_journal("--ref", "AUD-1", "--tz", "Asia/Tokyo", "--csv", "--since", modify_time.isoformat(),
                    env_extra=env)
    assert r.returncode == 0, r.stderr
    back = pd.read_csv(io.StringIO(r.stdout))
    assert back["Event"].tolist() == frame[frame["Time"] >= modify_time]["Event"].tolist()
    tomorrow = (frame["Time"].max() + timedelta(days=2)).date().isoformat()
    r = run_journal("--tz", "Asia/Tokyo", "--since", tomorrow, env_extra=env)
    assert r.returncode == 0 and "0 events" in r.stdout, r.stdout + r.stderr
    r = run_journal("--tz", "UTC", "--csv", env_extra=env)
    assert set(pd.read_csv(io.StringIO(r.stdout))["Ref"]) == {"AUD-1", "AUD-B", "AUD-B.TP", "AUD-B.SL"}


def test_ibxl_journal_says_what_is_wrong_without_a_traceback(story, tmp_path):
    path, missing = str(story.journal_path), tmp_path / "none.sqlite3"
    unknown = run_journal("--journal", path, "--ref", "NO-SUCH-REF")
    assert unknown.returncode == 1 and "'NO-SUCH-REF' is not in the order journal" in unknown.stderr
    absent = run_journal("--journal", str(missing))
    assert absent.returncode == 1 and f"no order journal at {missing}" in absent.stderr and not missing.exists()
    word = run_journal("--journal", path, "--since", "yesterday")
    assert word.returncode == 2 and "--since" in word.stderr and "YYYY-MM-DD" in word.stderr
    no_day = run_journal("--journal", path, "--since", "2026-02-30")
    assert no_day.returncode == 2 and "--since" in no_day.stderr
    zone = run_journal("--journal", path, "--tz", "Mars/Olympus")
    assert zone.returncode == 2 and "--tz" in zone.stderr
    for r in (unknown, absent, word, no_day, zone):
        assert "Traceback" not in r.stdout + r.stderr, r.stderr


# --- the Audit Table ----------------------------------------------------------------------------------
def audit_rows(path) -> list[dict]:
    ws = openpyxl.load_workbook(path)["Audit"]
    rows = list(ws[ws.tables["Audit"].ref])
    header = [c.value for c in rows[0]]
    return [dict(zip(header, [c.value for c in row])) for row in rows[1:] if any(c.value is not None for c in row)]


def test_refresh_audit_writes_the_trail_into_the_templates_audit_table(gw, story, tmp_path):
    path = tmp_path / "book.xlsx"
    shutil.copyfile(TEMPLATE, path)
    book = OpenpyxlBook.open(path)
    rt = Runtime("127.0.0.1", gw.port, 612, settings=Settings(risk=ROOMY), journal_path=story.journal_path)
    try:
        written = refresh_audit(book, rt, tz="Asia/Tokyo")          # needs no connection
        book.save()
    finally:
        rt.close()
    rows = audit_rows(path)
    expected = audit_frame(story.desk.journal, tz="Asia/Tokyo")
    assert len(rows) == len(expected) == len(written)
    assert [r["Event"] for r in rows] == expected["Event"].tolist()
    assert [r["Ref"] for r in rows] == expected["Ref"].tolist()
    for row, (_, want) in zip(rows, expected.iterrows()):
        wall = want["Time"].tz_localize(None).to_pydatetime()        # Tokyo wall time, no zone in the cell
        assert row["Time"].tzinfo is None and abs(row["Time"] - wall) < timedelta(milliseconds=1)
        assert row["Detail"] == want["Detail"]
    fill = next(r for r in rows if r["Ref"] == "AUD-1" and r["Event"] == "fill")
    assert fill["Quantity"] == 1 and fill["OrderId"] == story.desk.journal.intent("AUD-1")["order_id"]


def test_text_from_ib_starting_with_equals_is_written_as_text(gw, tmp_path):
    journal_path = tmp_path / "journal.sqlite3"
    evil = '=HYPERLINK("http://example.invalid","x")'
    with Journal(journal_path) as journal:      # what reconcile writes for an order IB showed under that Ref
        journal.adopt(evil, state="working", status="Submitted", perm_id=7, client_id=1, order_id=3,
                      message="=1+1")
        journal.record_status(evil, "=2+2", filled=0, remaining=1)
    path = tmp_path / "book.xlsx"
    shutil.copyfile(TEMPLATE, path)
    book = OpenpyxlBook.open(path)
    rt = Runtime("127.0.0.1", gw.port, 613, settings=Settings(risk=ROOMY), journal_path=journal_path)
    try:
        refresh_audit(book, rt, tz="UTC")
        book.save()
    finally:
        rt.close()
    ws = openpyxl.load_workbook(path)["Audit"]
    header = [c.value for c in ws[1]]
    cells = {name: ws.cell(row=2, column=header.index(name) + 1) for name in ("Ref", "Status", "Detail")}
    assert cells["Ref"].value == evil and cells["Ref"].data_type == "s"
    assert cells["Status"].value == "=2+2" and cells["Status"].data_type == "s"
    assert cells["Detail"].value == "=2+2 filled 0 remaining 1" and cells["Detail"].data_type == "s"
