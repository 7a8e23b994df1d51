"""The main job, headless: ``ibxl run`` (any workbook, any gateway) and ``ibxl demo`` (the template
against an embedded paper gateway).

Both do what a trader does with the buttons, in this order, on a workbook file opened through the
openpyxl adapter (``addin.excel.openpyxl_book``): connect, stream the Watchlist for N seconds (the
pump, flushed from this thread: the file adapter is not shared across threads), pull history, place
the pending order rows, wait until IB has answered every order sent (resting, filled with its
commission, cancelled or rejected), cancel, write the orders' audit trail into the Audit Table (when
the workbook has one), refresh the portfolio, write the last order states, save atomically. Each step
is a macro of ``addin.app.macros``: the buttons in Excel run the same code.

A step that fails is reported and the next one still runs (a bad History parameter must not cost the
user their order statuses); the workbook is saved whenever it was opened, and the exit code says
whether every step succeeded: the orders step fails when any row errored, was refused, was not sent
or was not confirmed by IB within the settle time, and a Log Table that could not be written fails
the run too. Right after connecting, one reqCurrentTime checks that the gateway answers requests at
all: one that accepted the connection but stays silent is diagnosed once, in seconds
(:class:`GatewayNotAnswering`), instead of each request timing out in turn.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..config import Settings, load_settings
from ..excel.openpyxl_book import OpenpyxlBook
from ..ib.session import IBError
from . import macros
from .runtime import Runtime

log = logging.getLogger(__name__)

# IB's order statuses after which nothing changes unless someone acts (plus our own outcomes).
FINAL = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive", "Rejected", "Refused", "Error",
                   "Not sent"})
SETTLED = FINAL | {"Submitted", "PreSubmitted"}
TEMPLATE = Path(__file__).resolve().parents[2] / "workbooks" / "ibxl.xlsx"
ANSWER_TIMEOUT = 5.0     # seconds the gateway has to answer reqCurrentTime right after connecting


class GatewayNotAnswering(IBError):
    """The gateway completed the connection but does not answer requests; nothing was sent."""

    def __init__(self, host: str, port: int, timeout: float):
        super().__init__(0, "no answer to reqCurrentTime", f"{host}:{port}")
        self.args = (f"connected to {host}:{port}, but it does not answer requests (no reply to reqCurrentTime "
                     f"within {timeout:g} s); nothing was sent. TWS / IB Gateway may be stuck, starting up or "
                     f"waiting for a login dialog: check it, then run again",)


class OrdersNotAllPlaced(Exception):
    """The orders step ended with rows that errored, were refused, were not sent or were not
    confirmed by IB; the message counts them and names the first few."""


class CancelNotDone(Exception):
    """``--cancel REF,...`` ended with Refs that were not cancelled; the message names each and why."""


@dataclass
class StepResult:
    name: str
    ok: bool
    detail: str


@dataclass
class RunSummary:
    """What a run did: one StepResult per step, the saved file, and the tables it wrote."""

    workbook: Path
    steps: list[StepResult] = field(default_factory=list)
    orders: pd.DataFrame | None = None
    quotes: pd.DataFrame | None = None
    bars: pd.DataFrame | None = None
    positions: pd.DataFrame | None = None
    audit: pd.DataFrame | None = None
    options: pd.DataFrame | None = None              # the Options sheet's Chain, when it streamed
    verdicts: list = field(default_factory=list)     # demo only: addin.app.demo.Verdict per sample row
    cancels: list[str] = field(default_factory=list)  # "REF: outcome" per Ref of --cancel
    analysis: dict | None = None                      # --analysis: the report written ({table: DataFrame})

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)


def run_workbook(path: str | Path, *, out: str | Path | None = None, host: str = "127.0.0.1",
                 port: int = 4002, client_id: int = 1, stream: float = 0.0, history: bool = False,
                 orders: bool = False, cancel: str | None = None, portfolio: bool = False,
                 analysis: bool = False, settings: Settings | None = None, journal_path: str | Path | None = None,
                 settle_timeout: float = 20.0, echo: Callable[[str], None] = print,
                 progress: Callable[[int, int], None] | None = None,
                 prepare_orders: Callable[[object, Runtime], object] | None = None,
                 strict_orders: bool = True, answer_timeout: float = ANSWER_TIMEOUT,
                 runtime=None) -> RunSummary:
    """Run the chosen jobs on the workbook at ``path`` against TWS / IB Gateway / a paper gateway at
    ``host:port`` and save it (to ``out`` when given, else in place).

    stream: seconds to stream the Watchlist (0: no streaming; order states are written at the end).
    cancel: "all" (reqGlobalCancel) or comma-separated Refs. analysis: write the portfolio analysis report
    (``Runtime.analysis``, its what-if from the Orders rows not sent yet) into the workbook. settings:
    risk and connection settings (default: the user's config file). journal_path: the order journal
    (default: the runtime's).
    progress: ``progress(done, total)`` for the history pull's IB requests. prepare_orders:
    ``prepare_orders(book, runtime)`` runs at the start of the orders step (the demo prices its
    sample rows from the live quote there); its failure fails the step and nothing is placed.
    strict_orders: the orders step fails when any row errored, was refused, was not sent or was not
    confirmed within ``settle_timeout`` (the demo, whose BAD-* rows are refused on purpose and judged
    by its own verdicts, passes False). answer_timeout: seconds the gateway has to answer one
    reqCurrentTime after connecting. runtime: the runtime to run on instead of a Runtime of this process
    (a ``RemoteRuntime`` of the ibxl service: host, port, client_id, settings and journal_path are then
    the service's); it is closed at the end (its connections; the service goes on).
    Returns a RunSummary. Raises WorkbookLockedError / WouldLosePartsError (before anything is sent)
    when the workbook cannot be written safely, IBError when the gateway cannot be reached,
    GatewayNotAnswering (an IBError) when it connects but does not answer.
    """
    settings = settings or load_settings()
    book = OpenpyxlBook.open(path, out=out)   # refuses a locked file or one it would damage, up front
    summary = RunSummary(workbook=Path(out or path))
    rt = runtime or Runtime(host, port, client_id, settings=settings, journal_path=journal_path,
                            market_data_type=settings.connection.market_data_type)
    try:
        status = macros.connect(book, rt)
        via = f" through the ibxl service (pid {status['service_pid']})" if "service_pid" in status else ""
        echo(f"connected to {status['host']}:{status['port']} as client {status['client_id']}{via}: accounts "
             f"{status['accounts']}{' (paper)' if status['paper'] else ' (LIVE)' if status['paper'] is False else ''}")
        if runtime is None:                      # the service checked its own session when it connected
            check_answers(rt, host, port, answer_timeout)
        pump = _step(summary, echo, "stream", lambda: _stream(book, rt, stream)) if stream > 0 else None
        if history:
            _step(summary, echo, "history", lambda: _history(book, rt, summary, progress))
        if orders:
            _step(summary, echo, "orders", lambda: _orders(book, rt, pump, summary, settle_timeout, prepare_orders,
                                                           strict_orders))
        if cancel:
            _step(summary, echo, "cancel", lambda: _cancel(book, rt, pump, cancel, summary, settle_timeout))
        if (orders or cancel) and macros.has_table(book, "Audit"):
            _step(summary, echo, "audit", lambda: _audit(book, rt, summary))
        if portfolio:
            _step(summary, echo, "portfolio", lambda: _portfolio(book, rt, summary))
        if analysis:
            _step(summary, echo, "analysis", lambda: _analysis(book, rt, summary))
        if pump is not None:
            pump.flush()
            summary.quotes = _quotes_frame(book)
            summary.options = book.read_table("Chain", drop_empty=True) if macros.has_table(book, "Chain") else None
            rt.stop_pump(macros.book_id(book))
    finally:
        refusals = macros.log_refusals(book)
        if refusals:
            summary.steps.append(StepResult("log", False, refusals[0]))
            echo(f"  log: FAILED: {refusals[0]}")
        try:
            saved = book.save()
            summary.workbook = saved
            echo(f"saved {saved}")
        finally:
            rt.close()
    return summary


def check_answers(rt: Runtime, host: str, port: int, timeout: float = ANSWER_TIMEOUT) -> None:
    """One reqCurrentTime: raise GatewayNotAnswering when no reply comes within ``timeout`` seconds (a
    gateway that accepted the connection but stays silent would otherwise cost every request its own
    timeout)."""
    got = threading.Event()

    def on_time(_t: int) -> None:
        got.set()

    session = rt.session
    session.events.currentTime.subscribe(on_time)
    try:
        session.send(lambda client: client.reqCurrentTime())
        if not got.wait(timeout):
            raise GatewayNotAnswering(host, port, timeout)
    finally:
        session.events.currentTime.unsubscribe(on_time)


def _step(summary: RunSummary, echo, name: str, fn):
    try:
        result = fn()
    except Exception as exc:     # a failed step is reported; the others still run
        log.debug("step %s failed", name, exc_info=True)
        summary.steps.append(StepResult(name, False, f"{type(exc).__name__}: {exc}"))
        echo(f"  {name}: FAILED: {exc}")
        return None
    summary.steps.append(StepResult(name, True, _detail(name, summary)))
    return result


def _detail(step: str, summary: RunSummary) -> str:
    """One line on what a step produced, for the summary."""
    if step == "history" and summary.bars is not None:
        return f"{len(summary.bars)} bars"
    if step == "orders" and summary.orders is not None and "Status" in summary.orders:
        counts = summary.orders["Status"].fillna("pending").value_counts()
        return ", ".join(f"{n} {status}" for status, n in counts.items())
    if step == "cancel" and summary.cancels:
        return "; ".join(summary.cancels)
    if step == "portfolio" and summary.positions is not None:
        return f"{len(summary.positions)} positions"
    if step == "audit" and summary.audit is not None:
        return f"{len(summary.audit)} events"
    if step == "analysis" and summary.analysis is not None:
        summary_rows = summary.analysis["Summary"]
        gross = summary_rows[(summary_rows["Account"] == "All") & (summary_rows["Measure"].isin(["Gross", "VaR95"]))]
        return ", ".join(f"{m} {v:,.0f}" for m, v in zip(gross["Measure"], gross["Value"])) + " (All)"
    return ""


def _stream(book, rt: Runtime, seconds: float):
    """Bind the pump to the Watchlist and flush it every interval for ``seconds``; returns the pump
    (kept bound, so order states reach the Orders rows while the later steps run)."""
    if not macros.has_table(book, "Watchlist") and not macros.has_table(book, "Orders"):
        return None
    pump = macros.start_streaming(book, rt, run=False)
    deadline = time.monotonic() + seconds
    cadence = threading.Event()          # never set: its wait() is the flush cadence, not a sync
    while True:
        pump.flush()
        left = deadline - time.monotonic()
        if left <= 0:
            return pump
        cadence.wait(min(left, pump.interval))


def _history(book, rt: Runtime, summary: RunSummary, progress=None):
    df = macros.pull_history(book, rt, progress=progress)
    summary.bars = df
    return df


def _settle(rt: Runtime, pump, refs: list[str], timeout: float, states: frozenset = SETTLED) -> pd.DataFrame:
    """Wait until every Ref in ``refs`` has a status in ``states`` (and a filled one its commission),
    flushing the pump meanwhile; returns the desk's table of them. Waits on the desk's listener."""
    desk = rt.orders
    changed = threading.Event()

    def on_change(ref, outputs):
        changed.set()

    desk.add_listener(on_change)
    deadline = time.monotonic() + timeout
    try:
        while True:
            table = desk.table()
            mine = table.loc[table.index.isin(refs)]
            if all(_settled(row, states) for _, row in mine.iterrows()):
                return mine
            left = deadline - time.monotonic()
            if left <= 0:
                return mine
            changed.wait(min(left, 0.25))
            changed.clear()
            if pump is not None:
                pump.flush()
    finally:
        desk.remove_listener(on_change)


def _settled(row, states: frozenset) -> bool:
    status = row.get("Status")
    if status not in states:
        return False
    if status == "Filled":
        c = row.get("Commission")
        return c is not None and not (isinstance(c, float) and math.isnan(c))
    return True


def _orders(book, rt: Runtime, pump, summary: RunSummary, settle_timeout: float, prepare=None,
            strict: bool = True):
    if prepare is not None:
        rt.connect()
        prepare(book, rt)
    out = macros.place_orders(book, rt)
    sent = [str(r) for r, s in zip(out["Ref"], out["Status"]) if s not in macros.NOT_PLACED]
    settled = _settle(rt, pump, sent, settle_timeout) if sent else None
    _write_order_states(book, rt, summary)
    if not strict:
        return
    problems = macros.order_problems(out)
    if settled is not None:
        for ref in sent:
            row = settled.loc[ref] if ref in settled.index else None
            if row is None or not _settled(row, SETTLED):
                status = None if row is None else row.get("Status")
                problems.append(f"{ref}: not confirmed by IB within {settle_timeout:g} s "
                                f"(status {status or 'unknown'})")
            elif row.get("Status") in ("Rejected", "Inactive"):
                problems.append(f"{ref}: {row.get('Status')} by IB: {row.get('Message')}")
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise OrdersNotAllPlaced(f"{macros.order_counts(out)}; {'; '.join(problems[:3])}{more}")


def _cancel(book, rt: Runtime, pump, what: str, summary: RunSummary, settle_timeout: float):
    """Cancel all (reqGlobalCancel) or the given Refs, wait until IB confirms each, write the rows."""
    working = rt.orders.table()
    working = working[working["Status"].isin(("Submitted", "PreSubmitted"))].index.tolist()
    if what.strip().lower() == "all":
        macros.cancel_all(book, rt)
        _settle(rt, pump, working, settle_timeout, FINAL)
        _write_order_states(book, rt, summary)
        return
    refs = [r.strip() for r in what.split(",") if r.strip()]
    out = macros.cancel_refs(book, rt, refs)
    summary.cancels = [f"{ref}: {rec['Outcome']}" for ref, rec in out.iterrows()]
    _write_order_states(book, rt, summary)
    missed = [f"{ref}: {rec['Outcome']} ({rec['Message']})" for ref, rec in out.iterrows()
              if rec["Outcome"] != "cancelled"]
    if missed:
        raise CancelNotDone(f"{len(refs) - len(missed)} of {len(refs)} cancelled; " + "; ".join(missed))


def _write_order_states(book, rt: Runtime, summary: RunSummary) -> None:
    """Every Orders row whose Ref the desk knows gets the desk's current outputs (the pump streams
    them too while it is bound; this makes the saved file right even without streaming)."""
    macros.refresh_order_rows(book, rt)
    summary.orders = _orders_frame(book)


def _audit(book, rt: Runtime, summary: RunSummary):
    """The Audit Table after the orders and cancels: every order's trail from the journal."""
    summary.audit = macros.refresh_audit(book, rt)
    return summary.audit


def _portfolio(book, rt: Runtime, summary: RunSummary):
    counts = macros.refresh_portfolio(book, rt)
    summary.positions = book.read_table("Positions", drop_empty=True) if macros.has_table(book, "Positions") else None
    return counts


def _analysis(book, rt, summary: RunSummary) -> dict[str, int]:
    """The analysis report (its what-if: the Orders rows not sent yet) into the Analysis sheet."""
    from .analysis_sheet import write_analysis
    report = rt.analysis(macros.analysis_basket(book))
    summary.analysis = report
    return write_analysis(book, report)


def _quotes_frame(book) -> pd.DataFrame | None:
    return book.read_table("Watchlist", drop_empty=True) if macros.has_table(book, "Watchlist") else None


def _orders_frame(book) -> pd.DataFrame | None:
    return book.read_table("Orders", drop_empty=True) if macros.has_table(book, "Orders") else None


def run_demo(out: str | Path, *, seconds: float = 5.0, echo: Callable[[str], None] = print,
             gateway=None) -> RunSummary:
    """``ibxl demo``: start the paper gateway on a free loopback port and an ibxl service in this process
    (its own socket and key in a temporary folder: the user's service, if any, is not touched), copy
    the template workbook to ``out``, stream the Watchlist for ``seconds``, pull history, price the
    sample orders from the live quote and place them (the BAD-* rows are refused by the risk rules on
    purpose), refresh the portfolio, write the portfolio analysis (the Analysis sheet) and save. Uses the
    built-in risk defaults with options allowed (``demo.demo_settings``; not the user's config file) and a
    fresh journal beside ``out``, so every run shows the same story at any date and hour. A last step,
    "samples", checks every sample row ended as intended (``addin.app.demo.verdicts``): a good row refused
    or in error, or a BAD-* row refused for another reason, fails it. ``gateway``: a running
    PaperGateway to use instead of a new one (tests). Returns the RunSummary."""
    from ..paper import PaperGateway
    from ..service.remote import RemoteRuntime
    from ..service.server import embedded_service
    from .demo import demo_settings, price_samples, verdicts

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TEMPLATE, out)
    journal = out.with_name(out.stem + ".journal.sqlite3")
    for suffix in ("", "-wal", "-shm"):
        Path(str(journal) + suffix).unlink(missing_ok=True)
    with contextlib.ExitStack() as stack:
        gw = gateway or stack.enter_context(PaperGateway(port=0))
        echo(f"paper gateway on 127.0.0.1:{gw.port} (replaying real prices; see docs/paper-market.md)")
        service = stack.enter_context(embedded_service(
            lambda: Runtime("127.0.0.1", gw.port, 1, settings=demo_settings(), journal_path=journal)))
        echo(f"ibxl service in this process on {service.address} (the workbook is its client)")
        rt = RemoteRuntime(service.address, service.authkey, name="ibxl demo")
        summary = run_workbook(out, stream=seconds, history=True, orders=True, portfolio=True, analysis=True,
                               settings=demo_settings(), echo=echo, prepare_orders=price_samples, strict_orders=False,
                               runtime=rt)
    summary.verdicts = verdicts(summary.orders)
    failed = [v.line for v in summary.verdicts if not v.ok]
    summary.steps.append(StepResult("samples", not failed, "; ".join(failed) if failed else
                                    f"{len(summary.verdicts)} sample rows ended as intended"))
    for line in failed:
        echo(f"  samples: FAILED: {line}")
    return summary


def _table_text(df: pd.DataFrame | None, columns: list[str], limit: int = 20) -> str:
    if df is None or df.empty:
        return "    (none)"
    cols = [c for c in columns if c in df.columns]
    text = df[cols].head(limit).to_string(index=False, na_rep="", max_colwidth=60)
    more = f"\n    ... {len(df) - limit} more" if len(df) > limit else ""
    return "\n".join("    " + line for line in text.splitlines()) + more


def format_summary(summary: RunSummary) -> str:
    """A readable account of a run: the steps, then the Watchlist, the history pulled, the order rows
    with their statuses and reasons, and the positions."""
    lines = ["", f"ibxl: {'all steps succeeded' if summary.ok else 'some steps FAILED'} -> {summary.workbook}"]
    for s in summary.steps:
        lines.append(f"  [{'ok' if s.ok else 'FAILED'}] {s.name}{': ' + s.detail if s.detail else ''}")
    if summary.quotes is not None:
        lines += ["", "Watchlist:", _table_text(summary.quotes, ["Symbol", "Bid", "Ask", "Last", "Volume",
                                                                 "ChangePct", "DataType"])]
    if summary.options is not None and len(summary.options):
        lines += ["", "Options (the Chain on the Options sheet):", _table_text(summary.options, [
            "CallBid", "CallAsk", "CallIV", "CallDelta", "Strike", "PutBid", "PutAsk", "PutIV", "PutDelta", "Data"])]
    if summary.bars is not None:
        b = summary.bars
        span = f"{b.index[0]:%Y-%m-%d} .. {b.index[-1]:%Y-%m-%d}" if len(b) else "none"
        lines += ["", f"History: {len(b)} bars ({span}); last close {b['close'].iloc[-1]:g}" if len(b)
                  else "History: no bars"]
    if summary.orders is not None:
        lines += ["", "Orders:", _table_text(summary.orders, [
            "Ref", "Symbol", "Action", "Quantity", "OrderType", "LimitPrice", "StopPrice", "TakeProfit", "StopLoss",
            "Status", "Filled", "AvgFillPrice", "Commission", "Message"])]
    if summary.positions is not None:
        lines += ["", "Positions:", _table_text(summary.positions, list(summary.positions.columns)[:8])]
    if summary.verdicts:
        lines += ["", "Sample rows:"] + [f"    [{'ok' if v.ok else 'FAILED'}] {v.line}" for v in summary.verdicts]
    return "\n".join(lines)
