"""OrderDesk against the paper gateway: real workbooks written with openpyxl and read back with pandas,
a real Session over a real socket, the gateway's own record of what it received. No mocks, no sleeps:
every wait is on an order event or the desk's own acknowledgement wait."""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from addin.account.portfolio import Portfolio
from addin.config import Settings
from addin.ib.contracts import ContractBook
from addin.ib.session import Session
from addin.market.quotes import MarketData
from addin.orders.desk import OUTPUT_FRAME_COLUMNS, OrderDesk
from addin.orders.rows import ORDER_INPUT_COLUMNS, ORDER_OUTPUT_COLUMNS
from addin.paper import PaperGateway

from .contracts import listed_es

_client_ids = itertools.count(301)

# Limits wide enough for the paper account; each test narrows what it exercises.
ROOMY = replace(Settings().risk, max_quantity=1_000, max_notional=2_000_000, max_position=100_000,
                max_open_orders=1_000, max_orders_per_minute=1_000, daily_loss_limit=1_000_000)


def settings(**risk) -> Settings:
    return Settings(risk=replace(ROOMY, **risk))


# --- workbooks -------------------------------------------------------------------------------------------
def write_orders(path: Path, rows: list[dict], config: dict | None = None) -> Path:
    """An Orders sheet (input and output columns, as the template has them) and an optional Config sheet."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Orders"
    header = list(ORDER_INPUT_COLUMNS) + list(ORDER_OUTPUT_COLUMNS)
    ws.append(header)
    for r in rows:
        ws.append([r.get(c) for c in header])
    if config is not None:
        cs = wb.create_sheet("Config")
        cs.append(["Key", "Value"])
        for k, v in config.items():
            cs.append([k, v])
    wb.save(path)
    return path


def read_orders(path: Path) -> pd.DataFrame:
    return pd.read_excel(path, sheet_name="Orders", engine="openpyxl")


def read_config(path: Path) -> dict:
    wb = openpyxl.load_workbook(path, data_only=True)
    return {k: v for k, v in wb["Config"].iter_rows(min_row=2, values_only=True) if k is not None}


def write_refs(path: Path):
    """The Excel side's write-back of assigned Refs: into the workbook file, saved at once."""
    def write(assigned: dict) -> None:
        wb = openpyxl.load_workbook(path)
        ws = wb["Orders"]
        col = [c.value for c in ws[1]].index("Ref") + 1
        for label, ref in assigned.items():
            ws.cell(row=int(label) + 2, column=col, value=ref)
        wb.save(path)
    return write


def write_outputs(path: Path, out: pd.DataFrame) -> None:
    wb = openpyxl.load_workbook(path)
    ws = wb["Orders"]
    header = [c.value for c in ws[1]]
    for label, row in out.iterrows():
        for name in OUTPUT_FRAME_COLUMNS:
            v = row[name]
            if isinstance(v, pd.Timestamp) or hasattr(v, "tzinfo"):
                v = v.replace(tzinfo=None) if v is not None else None
            ws.cell(row=int(label) + 2, column=header.index(name) + 1, value=None if pd.isna(v) else v)
    wb.save(path)


# --- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0, accounts=["DU1", "U2", "DU3"]) as gateway:
        yield gateway


class Rig:
    """A session, its contract book, market data and portfolio, and desks on a journal file."""

    def __init__(self, gw, tmp_path: Path):
        self.gw, self.tmp = gw, tmp_path
        self.client_id = next(_client_ids)
        self.session = Session(port=gw.port, client_id=self.client_id, backoff_min=0.05, backoff_max=0.5)
        self.session.connect()
        self.contracts = ContractBook(self.session)
        self.market = MarketData(self.session, self.contracts)
        self.portfolio = Portfolio(self.session)
        self.desks: list[OrderDesk] = []
        self.events: dict[int, Events] = {}

    def desk(self, s: Settings | None = None, journal: str = "journal.db") -> OrderDesk:
        d = OrderDesk(self.session, self.contracts, self.market, self.portfolio, s or settings(),
                      self.tmp / journal)
        self.desks.append(d)
        self.events[id(d)] = Events(d)
        return d

    def wait_status(self, desk: OrderDesk, ref: str, status: str, timeout: float = 10.0) -> dict:
        """Wait until the desk reported ``status`` for ``ref`` (or it already shows it); its outputs."""
        if desk.order(ref)["Status"] != status:
            self.events[id(desk)].wait(lambda seen: (seen.get(ref) or {}).get("Status") == status, timeout)
        return desk.order(ref)

    def received(self, refs=None) -> list:
        """What the gateway received from this client (the gateway's side of the story)."""
        got = [r for r in self.gw.received_orders() if r.client_id == self.client_id and not r.order.whatIf]
        return [r for r in got if refs is None or r.order.orderRef in refs]

    def close(self):
        for d in self.desks:
            d.close()
        self.portfolio.close()
        self.market.close()
        self.session.disconnect()


@pytest.fixture
def rig(gw, tmp_path):
    r = Rig(gw, tmp_path)
    yield r
    r.close()


def quote(rig, symbol="AAPL"):
    return rig.market.snapshot(symbol)


class Events:
    """The desk's listener: every (ref, outputs) it reports, with a condition to wait on."""

    def __init__(self, desk: OrderDesk):
        self.cond = threading.Condition()
        self.latest: dict[str, dict] = {}
        self.count = 0
        desk.add_listener(self.on)

    def on(self, ref, outputs):
        with self.cond:
            self.latest[ref] = outputs
            self.count += 1
            self.cond.notify_all()

    def wait(self, pred, timeout=10.0):
        with self.cond:
            assert self.cond.wait_for(lambda: pred(self.latest), timeout), f"timed out; saw {self.latest}"


# --- the sheet of good and bad rows ---------------------------------------------------------------------------
def test_good_rows_rest_or_fill_bad_rows_say_why_and_the_gateway_got_exactly_the_good_ones(rig, tmp_path):
    q = quote(rig)
    front = listed_es(rig.gw)[0].text                   # the front ES month the gateway lists today
    es = quote(rig, front)
    eur = quote(rig, "EUR/USD")
    below = round(q.bid * 0.98, 2)                   # inside the 5% band, far enough below to rest
    good = [
        {"Ref": "G-MKT", "Symbol": "AAPL", "Action": "BUY", "Quantity": 10, "OrderType": "MKT"},
        {"Ref": "G-LMT", "Symbol": " aapl ", "Action": "buy", "Quantity": "5", "OrderType": "lmt",
         "LimitPrice": below, "TIF": "gtc"},
        {"Ref": 17, "Symbol": "AAPL", "Action": "BUY", "Quantity": 3.0, "OrderType": "STP",
         "StopPrice": round(q.ask * 1.03, 2)},
        {"Ref": None, "Symbol": front, "Action": "BUY", "Quantity": 1, "OrderType": "LMT",
         "LimitPrice": es.bid - 25, "TakeProfit": es.bid + 50, "StopLoss": es.bid - 75},
        {"Ref": "G-EUR", "Symbol": "EUR/USD", "Action": "BUY", "Quantity": " 1,000 ", "OrderType": "LMT",
         "LimitPrice": round(round(eur.bid * 0.99 / 0.00005) * 0.00005, 5), "OutsideRTH": "TRUE"},
    ]
    bad = [
        ({"Ref": "B-NA", "Symbol": "AAPL", "Action": "BUY", "Quantity": "#N/A", "OrderType": "MKT"}, "Quantity:"),
        ({"Ref": "B-TXT", "Symbol": "AAPL", "Action": "BUY", "Quantity": "ten", "OrderType": "MKT"}, "Quantity:"),
        ({"Ref": "B-SYM", "Symbol": "NOSUCHX", "Action": "BUY", "Quantity": 1, "OrderType": "MKT"}, "Symbol:"),
        ({"Ref": "B-ACT", "Symbol": "AAPL", "Action": "HOLD", "Quantity": 1, "OrderType": "MKT"}, "Action:"),
        ({"Ref": "B-TICK", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1, "OrderType": "LMT",
          "LimitPrice": below + 0.005}, "tick_grid:"),
        ({"Ref": "B-BAND", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1, "OrderType": "LMT",
          "LimitPrice": round(q.bid * 0.5, 2)}, "price_band:"),
        ({"Ref": "B-QTY", "Symbol": "AAPL", "Action": "BUY", "Quantity": 5000, "OrderType": "MKT"}, "max_quantity:"),
        ({"Ref": "B-SHORT", "Symbol": "MSFT", "Action": "SELL", "Quantity": 5, "OrderType": "MKT"}, "allow_short:"),
        ({"Ref": "B-SEC", "Symbol": "^SPX.CBOE", "Action": "BUY", "Quantity": 1, "OrderType": "MKT"}, "sec_type:"),
        ({"Ref": "B-LMT", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1, "OrderType": "LMT"}, "LimitPrice:"),
        ({"Ref": "B-LIVE", "Account": "U2", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1, "OrderType": "MKT"},
         "live_account:"),
        # two rows with one Ref (trimmed, any case): neither is sent (issue 12; the first one used to be)
        ({"Ref": "B-DUP", "Symbol": "MSFT", "Action": "BUY", "Quantity": 1, "OrderType": "MKT"}, "Ref:"),
        ({"Ref": " b-dup ", "Symbol": "MSFT", "Action": "BUY", "Quantity": 1, "OrderType": "MKT"}, "Ref:"),
    ]
    rows = good + [r for r, _ in bad]
    for r in rows:
        r.setdefault("Account", "DU1")
    path = write_orders(tmp_path / "orders.xlsx", rows)
    desk = rig.desk()
    out = desk.place(read_orders(path), write_refs=write_refs(path))
    write_outputs(path, out)

    sheet = read_orders(path)
    assert list(out.index) == list(sheet.index)
    assert sheet.loc[3, "Ref"] == out.loc[3, "Ref"] and str(out.loc[3, "Ref"]).startswith("X")   # written back
    for i in range(len(good)):
        assert sheet.loc[i, "Status"] in ("Filled", "Submitted", "PreSubmitted"), (i, sheet.loc[i, "Message"])
        assert sheet.loc[i, "OrderId"] > 0 and sheet.loc[i, "PermId"] > 0
    filled = rig.wait_status(desk, "G-MKT", "Filled")
    assert filled["Filled"] == 10 and filled["Remaining"] == 0 and filled["AvgFillPrice"] > 0
    for j, (_, reason) in enumerate(bad):
        row = sheet.loc[len(good) + j]
        assert row["Status"] in ("Error", "Refused"), row.to_dict()
        assert any(part.startswith(reason) for part in str(row["Message"]).split("; ")), (reason, row["Message"])
        assert pd.isna(row["OrderId"])

    sent_refs = sorted(r.order.orderRef for r in rig.received())
    bracket = str(out.loc[3, "Ref"])
    assert sent_refs == sorted(["G-MKT", "G-LMT", "17", bracket, bracket + ".TP", bracket + ".SL", "G-EUR"])
    children = {r.order.orderRef: r for r in rig.received([bracket + ".TP", bracket + ".SL"])}
    parent = rig.received([bracket])[0]
    assert children[bracket + ".TP"].order.parentId == parent.order_id
    assert children[bracket + ".TP"].order.orderType == "LMT" and children[bracket + ".SL"].order.orderType == "STP"
    assert [parent.order.transmit, children[bracket + ".TP"].order.transmit,
            children[bracket + ".SL"].order.transmit] == [False, False, True]
    assert children[bracket + ".SL"].order.ocaGroup == bracket + ".OCA"
    lmt = rig.received(["G-LMT"])[0].order
    assert (lmt.tif, lmt.lmtPrice, float(lmt.totalQuantity), lmt.account) == ("GTC", below, 5.0, "DU1")
    assert rig.received(["G-EUR"])[0].order.outsideRth is True


def test_placing_the_same_sheet_twice_sends_each_order_once(rig, tmp_path):
    q = quote(rig, "MSFT")
    rows = [{"Ref": "T-1", "Account": "DU1", "Symbol": "MSFT", "Action": "BUY", "Quantity": 2, "OrderType": "MKT"},
            {"Ref": "T-2", "Account": "DU1", "Symbol": "MSFT", "Action": "BUY", "Quantity": 2, "OrderType": "LMT",
             "LimitPrice": round(q.bid * 0.97, 2)},
            {"Ref": None, "Account": "DU1", "Symbol": "MSFT", "Action": "BUY", "Quantity": 1, "OrderType": "LMT",
             "LimitPrice": round(q.bid * 0.97, 2)}]
    path = write_orders(tmp_path / "twice.xlsx", rows)
    desk = rig.desk()
    first = desk.place(read_orders(path), write_refs=write_refs(path))
    write_outputs(path, first)
    second = desk.place(read_orders(path), write_refs=write_refs(path))
    # a second desk on the same journal (Excel restarted) does not send them either
    third = rig.desk(journal="journal.db").place(read_orders(path))

    refs = [r.order.orderRef for r in rig.received()]
    assert sorted(refs) == sorted(["T-1", "T-2", first.loc[2, "Ref"]])
    for out in (second, third):
        assert list(out.Ref) == list(first.Ref)
        assert all(str(m).startswith("duplicate_ref:") for m in out.Message)
        assert list(out.OrderId) == list(first.OrderId)
    assert second.loc[0, "Status"] in ("Submitted", "Filled") and second.loc[1, "Status"] == "Submitted"


# --- the gates ----------------------------------------------------------------------------------------------
def test_live_account_gate_needs_allow_live_in_the_users_own_config(rig, tmp_path):
    rows = pd.DataFrame([{"Ref": "L-1", "Account": "U2", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1,
                          "OrderType": "MKT"}])
    wb_says_yes = {"allow_live": True, "max_quantity": 5}
    tightened, warnings = settings().tighten(wb_says_yes)
    assert any(w.startswith("allow_live:") for w in warnings)
    out = rig.desk(tightened).place(rows)
    assert out.loc[0, "Status"] == "Refused" and out.loc[0, "Message"].startswith("live_account: U2 is a live account")
    assert rig.received() == []

    allowed = rig.desk(settings(allow_live=True), journal="live.db").place(rows)
    assert allowed.loc[0, "Status"] in ("Submitted", "Filled"), allowed.loc[0].to_dict()
    rig.wait_status(rig.desks[-1], "L-1", "Filled")
    assert [r.order.account for r in rig.received()] == ["U2"]


def test_a_workbook_config_sheet_may_tighten_but_never_loosen(rig, tmp_path):
    path = write_orders(tmp_path / "cfg.xlsx", [
        {"Ref": "W-1", "Account": "DU1", "Symbol": "AAPL", "Action": "BUY", "Quantity": 40, "OrderType": "MKT"},
        {"Ref": "W-2", "Account": "DU1", "Symbol": "AAPL", "Action": "BUY", "Quantity": 8, "OrderType": "MKT"},
        {"Ref": "W-3", "Account": "DU1", "Symbol": "MSFT", "Action": "BUY", "Quantity": 1, "OrderType": "MKT"}],
        config={"Max Quantity": 10, "max_notional": 1e12, "Symbol_Deny": "MSFT", "allow_short": "TRUE",
                "read_only": False})
    user = settings(max_quantity=50, allow_short=False)
    s, warnings = user.tighten(read_config(path))
    assert s.risk.max_quantity == 10 and s.risk.max_notional == user.risk.max_notional
    assert s.risk.allow_short is False and s.risk.symbol_deny == ("MSFT",)
    assert {w.split(":")[0] for w in warnings} == {"max_notional", "allow_short"}
    out = rig.desk(s).place(read_orders(path))
    assert out.loc[0, "Message"].startswith("max_quantity: 40 > limit 10")
    rig.wait_status(rig.desks[-1], "W-2", "Filled")
    assert out.loc[2, "Message"].startswith("symbol_list: MSFT is on the deny list")
    assert [r.order.orderRef for r in rig.received()] == ["W-2"]


def test_read_only_mode_refuses_everything(rig):
    rows = pd.DataFrame([{"Ref": f"RO-{i}", "Account": "DU1", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1,
                          "OrderType": "MKT"} for i in range(3)])
    out = rig.desk(settings(read_only=True)).place(rows)
    assert (out.Status == "Refused").all()
    assert all(m.startswith("read_only:") for m in out.Message)
    assert rig.received() == []


def test_kill_switch_cancels_this_clients_orders_and_blocks_new_ones_until_reset(rig, tmp_path):
    q = quote(rig)
    low = round(q.bid * 0.97, 2)
    rows = pd.DataFrame([{"Ref": f"K-{i}", "Account": "DU1", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1,
                          "OrderType": "LMT", "LimitPrice": low} for i in range(3)])
    desk = rig.desk()
    events = Events(desk)
    out = desk.place(rows)
    assert (out.Status == "Submitted").all()
    # another client's working order must survive this client's kill switch
    other = Rig(rig.gw, tmp_path / "other")
    try:
        other_out = other.desk().place(pd.DataFrame([{"Ref": "K-OTHER", "Account": "DU1", "Symbol": "AAPL",
                                                      "Action": "BUY", "Quantity": 1, "OrderType": "LMT",
                                                      "LimitPrice": low}]))
        assert other_out.loc[0, "Status"] == "Submitted"
        assert sorted(desk.kill()) == ["K-0", "K-1", "K-2"]
        events.wait(lambda seen: all(seen.get(f"K-{i}", {}).get("Status") == "Cancelled" for i in range(3)))
        assert desk.killed
        refused = desk.place(pd.DataFrame([{"Ref": "K-NEW", "Account": "DU1", "Symbol": "AAPL", "Action": "BUY",
                                            "Quantity": 1, "OrderType": "MKT"}]))
        assert refused.loc[0, "Message"].startswith("kill_switch:")
        # the switch is in the journal: a restarted desk is still killed
        assert rig.desk(journal="journal.db").killed
        # IB's truth, from the gateway: both desks watch their Portfolio's open orders, and a watched
        # table hears only its own client's order events (IB pushes no other client's changes)
        open_refs = set(rig.gw.call(lambda s: [order.orderRef for _, order, _ in s.broker.open_orders()]))
        assert "K-OTHER" in open_refs and not open_refs & {"K-0", "K-1", "K-2"}
        desk.reset_kill()
        desk.place(pd.DataFrame([{"Ref": "K-NEW", "Account": "DU1", "Symbol": "AAPL", "Action": "BUY",
                                    "Quantity": 1, "OrderType": "MKT"}]))
        rig.wait_status(desk, "K-NEW", "Filled")
    finally:
        other.close()
    assert [r.order.orderRef for r in rig.received()] == ["K-0", "K-1", "K-2", "K-NEW"]


# --- cancel, modify, statuses -------------------------------------------------------------------------------
def test_cancel_by_row_modify_price_and_quantity_and_cancel_all(rig):
    q = quote(rig, "SPY")
    low = round(q.bid * 0.97, 2)
    rows = pd.DataFrame([{"Ref": f"C-{i}", "Account": "DU1", "Symbol": "SPY", "Action": "BUY", "Quantity": 2,
                          "OrderType": "LMT", "LimitPrice": low} for i in range(3)])
    desk = rig.desk()
    events = Events(desk)
    assert (desk.place(rows).Status == "Submitted").all()

    cancelled = desk.cancel(["C-0", "NOPE"])
    assert cancelled.loc["C-0", "Status"] == "Cancelled"
    assert cancelled.loc["NOPE", "Message"].startswith("not cancelled: Ref 'NOPE' is not in the journal")
    assert list(cancelled.Outcome) == ["cancelled", "unknown"]

    changed = dict(rows.loc[1], LimitPrice=round(low - 0.5, 2), Quantity=3)
    result = desk.modify(changed)
    assert result["Status"] == "Submitted" and result["Remaining"] == 3, result
    modified = [r for r in rig.received(["C-1"])]
    assert len(modified) == 2 and modified[1].order_id == modified[0].order_id
    assert (modified[1].order.lmtPrice, float(modified[1].order.totalQuantity)) == (round(low - 0.5, 2), 3.0)

    refused = desk.modify(dict(rows.loc[1], LimitPrice=round(q.bid * 0.5, 2)))
    assert refused["Message"].startswith("not modified: price_band:")
    wrong = desk.modify(dict(rows.loc[1], Action="SELL"))
    assert wrong["Message"].startswith("not modified: Action: IB cannot change an order's side (BUY -> SELL)")
    assert len(rig.received(["C-1"])) == 2

    desk.cancel_all()
    events.wait(lambda seen: all(seen.get(f"C-{i}", {}).get("Status") == "Cancelled" for i in (1, 2)))
    table = desk.table()
    assert set(table.loc[["C-0", "C-1", "C-2"], "Status"]) == {"Cancelled"}
    assert desk.order("C-1")["Quantity"] == 3 and desk.order("C-1")["State"] == "cancelled"


def test_fills_and_commissions_flow_to_the_listener(rig):
    desk = rig.desk()
    events = Events(desk)
    out = desk.place(pd.DataFrame([{"Ref": "F-1", "Account": "DU1", "Symbol": "GOOG", "Action": "BUY",
                                    "Quantity": 4, "OrderType": "MKT"}]))
    assert out.loc[0, "Status"] in ("Submitted", "Filled")
    events.wait(lambda seen: (seen.get("F-1") or {}).get("Commission") is not None)
    final = events.latest["F-1"]
    assert final["Commission"] == pytest.approx(1.0)            # IB fixed: 4 x 0.005, minimum 1.00 USD
    assert final["Filled"] == 4 and final["Remaining"] == 0
    fills = desk.journal.fills("F-1")
    assert len(fills) == 1 and fills[0]["shares"] == 4


def test_ib_rejection_is_shown_and_the_row_can_be_placed_again(rig):
    desk = rig.desk()
    rows = pd.DataFrame([{"Ref": "R-1", "Account": "DU1", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1,
                          "OrderType": "MKT"}])
    rig.gw.reject_next_order("margin check failed (test)")
    out = desk.place(rows)
    assert out.loc[0, "Status"] == "Rejected" and out.loc[0, "Message"].startswith("IB 201:")
    desk.place(rows)
    rig.wait_status(desk, "R-1", "Filled")
    assert [r.order.orderRef for r in rig.received()] == ["R-1", "R-1"]


def test_reconnect_reconciles_and_statuses_keep_flowing(rig):
    q = quote(rig)
    desk = rig.desk()
    events = Events(desk)
    out = desk.place(pd.DataFrame([{"Ref": "RC-1", "Account": "DU1", "Symbol": "AAPL", "Action": "BUY",
                                    "Quantity": 1, "OrderType": "LMT", "LimitPrice": round(q.bid * 0.97, 2)}]))
    assert out.loc[0, "Status"] == "Submitted"
    # an intent whose placeOrder was lost with the connection: journaled as transmitting, never sent
    desk.journal.record_intent("RC-LOST", {"ref": "RC-LOST", "quantity": 1.0}, account="DU1", symbol="AAPL.NASDAQ",
                               con_id=265598)
    desk.journal.mark_transmitting("RC-LOST", rig.client_id, 999_999)
    reconnects = rig.session.status.reconnects
    rig.gw.drop_connections()
    assert rig.session.wait_status(lambda st: st.reconnects > reconnects and st.state == "connected", 15)
    events.wait(lambda seen: (seen.get("RC-LOST") or {}).get("Status") == "Not sent")   # reconciled on reconnect
    assert desk.order("RC-LOST")["State"] == "not_received"
    assert desk.order("RC-1")["State"] == "working"
    result = desk.cancel("RC-1")          # the desk works on the new connection
    assert result.loc["RC-1", "Status"] == "Cancelled"
    assert [r.order.orderRef for r in rig.received()] == ["RC-1"]


def test_whatif_margin_check_refuses_an_order_beyond_available_funds(rig):
    desk = rig.desk(settings(whatif_margin_check=True, max_quantity=1e9, max_notional=1e12, max_position=1e12))
    rows = pd.DataFrame([{"Ref": "M-1", "Account": "DU1", "Symbol": "AAPL", "Action": "BUY", "Quantity": 50_000,
                          "OrderType": "MKT"},
                         {"Ref": "M-2", "Account": "DU1", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1,
                          "OrderType": "MKT"}])
    out = desk.place(rows)
    assert out.loc[0, "Message"].startswith("whatif_margin: initial margin"), out.loc[0].to_dict()
    rig.wait_status(desk, "M-2", "Filled")
    assert [r.order.orderRef for r in rig.received()] == ["M-2"]


def test_an_order_held_with_transmit_false_is_transmitted_by_modifying_its_row(rig):
    q = quote(rig, "SPY")
    row = {"Ref": "H-1", "Account": "DU1", "Symbol": "SPY", "Action": "BUY", "Quantity": 1, "OrderType": "LMT",
           "LimitPrice": round(q.bid * 0.98, 2), "Transmit": False}
    desk = rig.desk()
    out = desk.place(pd.DataFrame([row]))
    assert out.loc[0, "Status"] == "PreSubmitted"
    result = desk.modify(dict(row, Transmit=True, Symbol="spy"))
    assert result["Status"] == "Submitted", result
    sent = rig.received(["H-1"])
    assert [r.order.transmit for r in sent] == [False, True] and sent[0].order_id == sent[1].order_id


def test_orders_per_minute_and_the_daily_loss_limit_read_from_live_pnl(rig):
    rows = pd.DataFrame([{"Ref": f"P-{i}", "Account": "DU1", "Symbol": "MSFT", "Action": "BUY", "Quantity": 1,
                          "OrderType": "MKT"} for i in range(3)])
    out = rig.desk(settings(max_orders_per_minute=2)).place(rows)
    assert list(out.Status[:2]) != ["Refused", "Refused"] and out.loc[2, "Status"] == "Refused"
    assert out.loc[2, "Message"].startswith("max_orders_per_minute: 2 sent in the last minute + 1 new > limit 2")
    # the journal remembers: a restarted desk on it counts the same two
    again = rig.desk(settings(max_orders_per_minute=2)).place(rows.assign(Ref=["P-3", "P-4", "P-5"]))
    assert (again.Status == "Refused").all()
    # DU3 never traded: its live daily P&L (reqPnL) is exactly 0, which a limit of 0 has reached
    assert rig.portfolio.pnl("DU3").loc["DU3", "daily"] == 0.0
    du3 = rows.assign(Ref=["Q-1", "Q-2", "Q-3"], Account="DU3")
    out = rig.desk(settings(daily_loss_limit=0.0), journal="pnl.db").place(du3)
    assert all(m.startswith("daily_loss: today's P&L 0 USD reached the limit -0 USD") for m in out.Message)
    assert sorted(r.order.orderRef for r in rig.received()) == ["P-0", "P-1"]


def test_nothing_is_sent_without_a_connection(rig):
    desk = rig.desk()
    rig.session.disconnect()
    out = desk.place(pd.DataFrame([{"Ref": "N-1", "Account": "DU1", "Symbol": "AAPL", "Action": "BUY",
                                    "Quantity": 1, "OrderType": "MKT"}]))
    assert out.loc[0, "Status"] == "Error" and out.loc[0, "Message"].startswith("IB 504: not connected")
    assert desk.table().empty and rig.received() == []


# --- the order path: standing feeds, one message per order -------------------------------------------------
def wire_ids(session) -> list[int]:
    """Every message id ibapi hands to the socket from now on (the session's connection, wrapped)."""
    seen: list[int] = []
    conn = session._client.conn
    send = conn.sendMsg

    def counted(msg):
        body = bytes(msg[4:])
        seen.append(int.from_bytes(body[:4], "big") if body[:1] == b"\x00" else int(body.split(b"\0", 1)[0] or 0))
        return send(msg)
    conn.sendMsg = counted
    return seen


PLACE_ORDER = 3   # ibapi's outgoing message id of placeOrder
# What each place() asks IB before it sends (its record of orders: every client's open orders,
# completed orders, executions), by ibapi's outgoing message ids.
IB_RECORD = [16, 99, 7]     # REQ_ALL_OPEN_ORDERS, REQ_COMPLETED_ORDERS, REQ_EXECUTIONS


def test_after_the_first_order_an_order_sends_only_its_placeOrder(rig):
    """Besides the check against IB's record of orders (issue 12), nothing per order: no risk data."""
    q = quote(rig, "AAPL")
    low = round(q.bid * 0.97, 2)

    def row(ref: str) -> pd.DataFrame:
        return pd.DataFrame([{"Ref": ref, "Account": "DU1", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1,
                              "OrderType": "LMT", "LimitPrice": low}])
    desk = rig.desk()
    wire = wire_ids(rig.session)
    first = desk.place(row("WO-1"))
    assert first.loc[0, "Status"] == "Submitted"
    assert wire.count(PLACE_ORDER) == 1 and len(wire) > 1     # the first order opened the watches
    for ref in ("WO-2", "WO-3", "WO-4"):
        before = len(wire)
        out = desk.place(row(ref))
        assert out.loc[0, "Status"] == "Submitted", out.loc[0, "Message"]
        assert sorted(wire[before:]) == sorted(IB_RECORD + [PLACE_ORDER]), f"{ref} sent {wire[before:]}"
    # the desk's feeds end with it: watches released, its quote line cancelled
    assert rig.portfolio.watched() != {}
    desk.close()
    assert rig.portfolio.watched() == {} and rig.market.subscriptions() == {}
    assert [r.order.orderRef for r in rig.received()] == ["WO-1", "WO-2", "WO-3", "WO-4"]


def test_orders_ib_has_not_reported_yet_count_against_the_limits(rig):
    q = quote(rig, "AAPL")
    low = round(q.bid * 0.97, 2)

    def row(ref: str, n: int) -> pd.DataFrame:
        return pd.DataFrame([{"Ref": ref, "Account": "DU1", "Symbol": "AAPL", "Action": "BUY",
                              "Quantity": n, "OrderType": "LMT", "LimitPrice": low}])
    desk = rig.desk(settings(max_position=100, ack_timeout=0.2))
    held = rig.portfolio.positions()
    held = float(held[(held.account == "DU1") & (held.symbol == "AAPL")].position.sum())
    assert desk.place(row("U-0", 1)).loc[0, "Status"] == "Submitted"     # feeds open and complete
    room = int(100 - held - sum(r.remaining for r in rig.portfolio.open_orders().itertuples()
                                     if r.account == "DU1" and r.symbol == "AAPL" and r.action == "BUY"))
    assert room >= 2                       # U-1 takes all but one; U-2's 2 would pass without U-1
    rig.gw.delay_answers(2.0)
    try:
        out = desk.place(row("U-1", room - 1))
        assert out.loc[0, "Status"] == "Transmitted"                     # IB has not answered yet
        out = desk.place(row("U-2", 2))
        assert out.loc[0, "Status"] == "Refused" and out.loc[0, "Message"].startswith("max_position:"), out.loc[0]
    finally:
        rig.gw.delay_answers(0)
    rig.wait_status(desk, "U-1", "Submitted")
    assert [r.order.orderRef for r in rig.received()] == ["U-0", "U-1"]


def test_after_a_reconnect_facts_wait_for_the_restored_snapshots(rig, tmp_path):
    from addin.orders.facts import WORKING_STATUSES
    q = quote(rig, "AAPL")
    low = round(q.bid * 0.97, 2)

    def row(ref: str) -> pd.DataFrame:
        return pd.DataFrame([{"Ref": ref, "Account": "DU1", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1,
                              "OrderType": "LMT", "LimitPrice": low}])
    desk = rig.desk()
    assert desk.place(row("RR-1")).loc[0, "Status"] == "Submitted"      # the open-orders watch is complete
    # another client's order: this client's watched table does not hear of it until reqAllOpenOrders is
    # re-sent, which the reconnect does
    other = Rig(rig.gw, tmp_path / "other")
    try:
        assert other.desk().place(row("RR-OTHER")).loc[0, "Status"] == "Submitted"
    finally:
        other.close()
    working = rig.gw.call(lambda s: sum(1 for _, _, st in s.broker.open_orders() if st.status in WORKING_STATUSES))
    desk.limits = replace(desk.limits, max_open_orders=working)        # one more order is one too many
    n = rig.session.status.reconnects
    rig.gw.delay_answers(0.5)              # the re-sent snapshots arrive late
    try:
        rig.gw.drop_connections()
        assert rig.session.wait_status(lambda s: s.reconnects > n and s.state == "connected", 20)
        out = desk.place(row("RR-2"))
    finally:
        rig.gw.delay_answers(0)
    # read from the stale table (without R-OTHER) R-2 would have passed
    assert out.loc[0, "Status"] == "Refused", out.loc[0, "Message"]
    assert out.loc[0, "Message"].startswith(f"max_open_orders: {working} open + 1 new > limit {working}")
    assert [r.order.orderRef for r in rig.received()] == ["RR-1"]
