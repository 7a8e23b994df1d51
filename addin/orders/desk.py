"""Orders from sheet rows: parse -> qualify -> risk -> journal -> placeOrder, and the way back.

:class:`OrderDesk` is the only place that transmits orders. A row becomes an order only after it
parsed cleanly (:mod:`addin.orders.rows`), named a real contract (``ContractBook.qualify``), passed
every risk rule (:mod:`addin.orders.risk`) and its intent was written to the journal (:mod:`addin.orders.journal`).
A Ref is never sent twice (Refs compare trimmed and in any case: :func:`addin.orders.refs.ref_key`):
- the journal blocks it once it is transmitting, working or done, and moving it to transmitting is a
  compare-and-set on the owner that wrote its intent (:meth:`Journal.claim`): of several ibxl processes
  sharing the journal exactly one sends it, the others refuse ("being sent by another ibxl");
- IB is the authority: every :meth:`OrderDesk.place` that may send takes one fresh snapshot of IB's
  record (every client's open orders, completed orders, executions, by orderRef; a bracket child counts
  for its parent) before the first placeOrder, and a Ref IB knows is refused and written back into the
  journal, so a deleted, emptied or replaced journal never causes a resend. No snapshot within
  ``SNAPSHOT_TIMEOUT`` seconds: nothing is sent;
- a blank-Ref row gets its Ref recorded in the journal under the row's identity (source, row label,
  its order fields: :func:`addin.orders.refs.row_identity`) before it is written back or sent; a row that
  comes back blank (a crash before the workbook was saved) reuses that Ref while it was never sent, and
  is refused ("possibly already sent as REF") once it was;
- a journal that is damaged, not a journal, or fails a write refuses every row (Status Error, the
  message names the file and what to do); one locked by another process refuses the rows and is
  opened again on the next place.
On every connect and reconnect :meth:`OrderDesk.reconcile` matches the journal with IB's record, so the
rows show the truth and nothing is resent blindly.

Refs at IB: the row's Ref is the order's ``orderRef``. A bracket (a row with TakeProfit and/or
StopLoss) is three orders: the entry (Ref), a LMT take-profit child ``Ref.TP`` and a STP stop-loss
child ``Ref.SL``, with parentId set, transmit False on all but the last, and the children in OCA group
``Ref.OCA`` (ocaType 1). The row shows the entry; :meth:`OrderDesk.table` lists the children too.

Output columns (``ORDER_OUTPUT_COLUMNS``): Status (IB's order status, or Error: the row did not parse;
Refused: a risk rule; Not sent: journaled but never transmitted; Transmitted: sent, no answer yet;
Rejected: IB refused it), OrderId, PermId (int, None before IB's answer), Filled, Remaining (float,
shares/contracts), AvgFillPrice (contract currency), Commission (sum of IB's reports, in the report's
currency), Message (why, or IB's last word), Updated (UTC datetime of the last change).

Step observers (:meth:`OrderDesk.add_step_observer`) see an order pass each of ``ORDER_STEPS``, the
points between the journal write and IB's answer (tests/test_orders_crash.py kills the process at each).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pandas as pd
from ibapi.order import Order
from ibapi.order_cancel import OrderCancel

from ..config import Settings
from ..ib.contracts import InstrumentError, format_contract
from ..ib.session import IBError
from . import amend
from .amend import AmendPlan, AmendRefused
from .audit import describe
from .facts import DeskFacts, FactGatherer, finite
from .journal import BLOCKING_STATES, DuplicateRefError, Journal, JournalBusyError, JournalError
from .refs import Owner, ref_key, row_identity
from .risk import RiskCheck, RiskLimits, check_whatif, evaluate
from .rows import ORDER_INPUT_COLUMNS, ORDER_OUTPUT_COLUMNS, OrderIntent, RowError, new_ref, parse_row, parse_rows
from .sync import KnownOrder, OrderSync

log = logging.getLogger(__name__)

__all__ = ["OrderDesk", "ORDER_STEPS", "MODIFY_STEPS", "OUTPUT_FRAME_COLUMNS", "OUTCOMES", "CANCEL_OUTCOMES"]

# An order's way out, as step observers see it: its intent is in the journal; it is marked transmitting
# (order ids taken); its placeOrder was handed to the socket; IB answered every order of the batch.
ORDER_STEPS = ("after_journal", "after_mark", "after_send", "after_ack")
# A modification's way out: its transmission is in the journal; its placeOrder was handed to the socket.
MODIFY_STEPS = ("modify_marked", "modify_sent")
OUTPUT_FRAME_COLUMNS = ("Ref",) + ORDER_OUTPUT_COLUMNS
# What place() did with each row (the frame's Outcome column; the sheet does not show it, the Log counts it).
CANCEL_OUTCOMES = ("cancelled", "already filled", "already cancelled", "already rejected", "unknown",
                   "not cancellable", "not sent", "unconfirmed")
OUTCOMES = ("sent", "modified", "released", "unchanged", "not modified", "already sent", "refused", "error",
            "not sent", "unconfirmed")
SNAPSHOT_TIMEOUT = 10.0        # seconds IB may take to show its record before place() sends nothing


class OrderDesk:
    """Places, modifies and cancels orders from Orders-table rows through one Session.

    session: a connected :class:`addin.ib.session.Session`; contracts: its ``ContractBook``; market: a
    ``MarketData`` (quotes for market orders and the price band: the board when fresh, else a
    snapshot); portfolio: a ``Portfolio`` (positions, open orders, P&L, account values);
    settings: :class:`addin.config.Settings` (already tightened by the workbook, if any);
    journal_path: the SQLite journal file. Reconciles with IB on construction and after every
    reconnect. Risk facts come from standing feeds (``self.facts``, :class:`addin.orders.facts.DeskFacts`:
    Portfolio watches and quote lines opened by the first order, ended by ``close()``), so after the
    first order an order sends only its placeOrder. Thread-safe; ``place``/``modify``/``cancel``/``reconcile``
    run one at a time.
    """

    def __init__(self, session, contracts, market, portfolio, settings: Settings, journal_path):
        self.session, self.contracts, self.market, self.portfolio = session, contracts, market, portfolio
        self.settings = settings
        self.limits = RiskLimits.from_settings(settings)
        self.journal_path = journal_path
        self.owner = Owner.new(session.client_id)    # this desk's claims in the journal
        self.fault: JournalError | None = None       # set: every row is refused (the journal cannot be trusted)
        try:
            self.journal = Journal(journal_path)
        except JournalError as exc:                  # never a traceback: the rows say it (place)
            log.error("%s", exc)
            self.fault, self.journal = exc, Journal(":memory:")
        self._desk = threading.RLock()               # one place/modify/cancel/reconcile at a time
        self.sync = OrderSync(session, self.journal)
        self.facts = DeskFacts(self)                 # standing feeds: an order sends only its placeOrder
        self._closed = False
        self._step_observers: list[Callable[[str], None]] = []
        session.add_restore_hook(self._on_restore)
        if session.connected:
            self.reconcile()

    # --- public ---------------------------------------------------------------------------------------
    # write_refs takes dict[Any, str]: its keys are ``rows``' index labels, whose type only the caller
    # knows (the Excel side's are worksheet row numbers), so it may declare them as it reads them.
    def place(self, rows: pd.DataFrame, write_refs: Callable[[dict[Any, str]], None] | None = None,
              source: str = "", followed: Iterable[Hashable] = ()) -> pd.DataFrame:
        """Turn Orders-table rows into orders. Returns one row of outputs per input row, indexed like
        ``rows``, columns Ref + ORDER_OUTPUT_COLUMNS. Rows with a blank Ref get one (see
        ``addin.orders.rows.new_ref``); ``write_refs({index label: ref})`` is called with them before
        anything is sent (the Excel side writes them into the sheet; if it raises, those rows are not sent).
        The assigned Ref is recorded in the journal first, under the row's identity (``source``: the
        workbook and Table, ``orders.xlsm!Orders``, "" when unknown; the row's label; its order
        fields): a row that comes back blank reuses it while it was never sent and is refused once it
        was (module docstring).
        A row whose Ref is a working order is compared with what IB holds (:mod:`addin.orders.amend`):
        changed prices, quantity, TIF, ... are sent as a modification (same order ids, after the risk
        rules on the new values), Transmit FALSE -> TRUE releases an order held at TWS, and a change
        IB cannot make is refused with its reason, the order untouched. Any other Ref already
        transmitting or done, or known at IB, is not sent again: its row shows its state and a
        ``duplicate_ref`` message.
        followed: labels of rows placed before (their Status is filled in): each is modified,
        released or shown as the journal has it, never sent as a new order; one whose Ref the journal
        does not hold is left out of the result (its row stays as it is).
        The result has an extra column Outcome (``OUTCOMES``: what was done with the row). Never
        raises for bad rows, IB refusals or a faulty journal: they are in Message."""
        with self._desk:
            out: dict[Hashable, dict[str, Any]] = {}     # the frame is built after sending: it is slow
            parsed = parse_rows(rows)
            if isinstance(self.fault, JournalBusyError):
                self._reopen()
            if self.fault is not None:
                return self._refuse_all(rows, parsed, "Error", str(self.fault))
            follow = set(followed)
            tracked = {label: parsed.pop(label) for label in list(parsed) if label in follow}
            skipped = {label for label, item in tracked.items() if not item.ref or self.journal.get(item.ref) is None}
            for label, item in tracked.items():
                if label not in skipped:
                    self._put(out, label, item.ref, **self._follow(item))
            try:
                assigned, reused, refused = self._assign_refs(parsed, source)
            except JournalError as exc:
                self._journal_failed(exc)
                return self._refuse_all(rows, parsed, "Error", str(exc))
            if assigned and write_refs is not None:
                try:
                    write_refs(dict(assigned))
                except Exception as exc:                  # nothing of these rows may leave without its Ref
                    for label in assigned:
                        parsed[label] = RowError(label, "Ref", f"could not write the assigned Ref back: {exc}",
                                                 assigned[label])
            for label, ref in refused.items():           # the row's earlier Ref was sent: refuse, never resend
                self._put(out, label, "", Status="Refused", Message=_possibly_sent(ref), Outcome="refused")
                del parsed[label]
            for label, item in list(parsed.items()):     # a working order's row: modify, release or unchanged
                if not isinstance(item, OrderIntent) or not item.ref:
                    continue
                rec = self.journal.get(item.ref)
                if rec is not None and self._works(rec) and label not in reused:
                    result = self._amend(item, rec)
                    if result["Outcome"] == "unchanged":     # a new row with a working order's Ref, as it is
                        result.update(Outcome="already sent", Message=f"duplicate_ref: {rec['ref']} is working at IB "
                                                                      f"as the row shows it; not sent again")
                    self._put(out, label, item.ref, **result)
                    del parsed[label]
            known: dict[str, KnownOrder] | None = {}
            if self.session.connected and any(isinstance(r, OrderIntent) for r in parsed.values()):
                known = self.sync.snapshot(SNAPSHOT_TIMEOUT)     # fresh: after the Refs, before any send
            batch = self.facts.batch()
            sent: list[str] = []
            for label, item in parsed.items():
                if isinstance(item, RowError):
                    self._put(out, label, item.ref, Status="Error", Message=str(item), Outcome="error")
                    continue
                try:
                    if self.fault is not None:
                        raise _Refusal("Error", str(self.fault))
                    if known is None:
                        raise _Refusal("Error", f"IB did not show its record of orders within {SNAPSHOT_TIMEOUT:g} s "
                                                f"(reqAllOpenOrders, reqCompletedOrders, reqExecutions), so no Ref can "
                                                f"be checked against it: nothing was sent")
                    refs = self._place_one(item, batch, known, reused.get(label))
                except JournalError as exc:
                    self._journal_failed(exc)
                    self._put(out, label, item.ref, Status="Error", Message=f"not sent: {exc}", Outcome="error")
                    continue
                except _Refusal as r:
                    self._put(out, label, item.ref, Status=r.status, Message=r.message, Outcome=r.outcome,
                              **({} if r.keep is None else r.keep))
                    continue
                sent.extend(refs)
                self._put(out, label, item.ref, **self._outputs(item.ref), Outcome="sent")
            if sent:
                self.sync.wait_answers(sent, self.limits.ack_timeout)
                if self.sync.answered(sent):
                    self._step("after_ack")
                for label, item in parsed.items():
                    if isinstance(item, OrderIntent) and item.ref in sent:
                        self._put(out, label, item.ref, **self._outputs(item.ref))
            return _frame(rows.loc[[label for label in rows.index if label not in skipped]], out)

    def _assign_refs(self, parsed: dict[Hashable, OrderIntent | RowError], source: str
                     ) -> tuple[dict[Hashable, str], dict[Hashable, str], dict[Hashable, str]]:
        """Refs for the blank-Ref rows, recorded in the journal under each row's identity first.
        Returns {label: Ref} three times: assigned (to write back and send), reused (of those, the
        ones an earlier place assigned to this row) and refused (the row's earlier Ref was already
        sent: not assigned). ``parsed`` gets the assigned Refs. Raises JournalError."""
        assigned: dict[Hashable, str] = {}
        reused: dict[Hashable, str] = {}
        refused: dict[Hashable, str] = {}
        for label, item in parsed.items():
            if not isinstance(item, OrderIntent) or item.ref:
                continue
            fresh = new_ref()
            ref = self.journal.row_ref(row_identity(source, label, item.fields()), fresh)
            if ref != fresh:
                rec = self.journal.get(ref)
                if rec is not None and rec["state"] in BLOCKING_STATES:
                    refused[label] = ref
                    continue
                reused[label] = ref
            assigned[label] = ref
            parsed[label] = replace(item, ref=ref)
        return assigned, reused, refused

    def _outputs(self, ref: str) -> dict:
        try:
            return self.sync.outputs(ref)
        except JournalError as exc:
            self._journal_failed(exc)
            return {**self._blank_outputs(), "Status": "Transmitted",
                    "Message": f"sent; its state could not be recorded: {exc}"}

    def _journal_failed(self, exc: JournalError) -> None:
        """A journal fault stops every later row (a lock held by another process: until the next place)."""
        log.error("%s", exc)
        self.fault = exc

    def _reopen(self) -> None:
        """Open the journal again after it was locked by another process."""
        try:
            journal = Journal(self.journal_path)
        except JournalError as exc:
            self.fault = exc
            return
        old, self.journal, self.sync.journal, self.fault = self.journal, journal, journal, None
        old.close()

    def _refuse_all(self, rows: pd.DataFrame, parsed: dict, status: str, message: str) -> pd.DataFrame:
        """Every parsed row refused with one message (a journal that cannot be trusted)."""
        return _frame(rows, {label: {"Ref": item.ref, "Status": status, "Message": message, "Outcome": "error"}
                             for label, item in parsed.items()})

    def cancel(self, refs: str | Iterable[str]) -> pd.DataFrame:
        """Cancel the working orders of these Refs (a bracket's entry cancels its children at IB).
        Returns the outputs indexed by Ref after IB's answers (or ``ack_timeout``), plus Outcome, one
        of ``CANCEL_OUTCOMES``: cancelled; already filled / already cancelled / already rejected (done
        before the cancel: nothing was sent, or IB filled it first); unknown (not in the journal);
        not cancellable (IB refused, e.g. 161, with IB's words in Message); not sent (the order never
        reached IB); unconfirmed (IB said nothing within ack_timeout)."""
        refs = [refs] if isinstance(refs, str) else [str(r).strip() for r in refs]
        notes: dict[str, tuple[str, str]] = {}
        with self._desk:
            waiting: dict[str, tuple[int, int]] = {}
            for ref in refs:
                rec = self.journal.get(ref)
                if rec is None:
                    notes[ref] = ("unknown", f"not cancelled: Ref {ref!r} is not in the journal (no order of "
                                             f"ibxl's has it)")
                elif rec["state"] in ("intent_written", "not_received"):
                    notes[ref] = ("not sent", "not cancelled: the order never reached IB")
                elif rec["state"] not in ("working", "transmitting") or rec["order_id"] is None:
                    said = rec["status"] or rec["state"]
                    notes[ref] = (f"already {said.lower()}" if rec["state"] in ("filled", "cancelled", "rejected")
                                  else "not cancellable", f"not cancelled: the order is already {said}")
                else:
                    waiting[ref] = self.sync.marker(ref)
                    self._send_cancel(rec)
            self.sync.wait(lambda: all(self.journal.intent(r)["state"] not in ("working", "transmitting")
                                       or self.sync.marker(r)[1] > m[1] for r, m in waiting.items()),
                           self.limits.ack_timeout)
            for ref, marker in waiting.items():
                rec = self.journal.intent(ref)
                if rec["state"] == "cancelled":
                    notes[ref] = ("cancelled", rec["message"] or "cancelled")
                elif rec["state"] == "filled":
                    notes[ref] = ("already filled", "not cancelled: IB filled it before the cancel arrived")
                elif self.sync.marker(ref)[1] > marker[1]:
                    notes[ref] = ("not cancellable", f"not cancelled: {rec['message']}")
                else:
                    notes[ref] = ("unconfirmed", f"cancel sent; IB has not confirmed it within "
                                                 f"{self.limits.ack_timeout:g} s")
        frame = self._frame(refs, {ref: message for ref, (_, message) in notes.items()})
        frame["Outcome"] = [notes[ref][0] for ref in refs]
        return frame

    def cancel_all(self) -> None:
        """reqGlobalCancel: every open order of the account(s), from every client and TWS."""
        self.journal.mark_transmitting("*", self.session.client_id, 0, kind="global_cancel")
        self.session.send(lambda c: c.reqGlobalCancel(OrderCancel()))

    def modify(self, row: pd.Series | Mapping[str, Any]) -> dict:
        """Modify the working order of one row (same Ref): its changed Quantity, prices, trail, Offset,
        TIF, GoodTillDate or OutsideRTH are sent as IB's modification (placeOrder again with the same
        order ids, after every risk rule on the new values), or Transmit FALSE -> TRUE releases an
        order held at TWS. What IB cannot change (Symbol, Action, OrderType, Account, OCAGroup) is
        refused with that reason and the order left as it is. Returns the row's outputs plus Outcome
        (Message says why when nothing was sent)."""
        values = dict(row) if not isinstance(row, pd.Series) else row.to_dict()
        values = {" ".join(str(k).split()).lower(): v for k, v in values.items()}
        intent = parse_row({c: values.get(c.lower()) for c in ORDER_INPUT_COLUMNS}, None)
        if isinstance(intent, RowError):
            return {"Ref": intent.ref, **self._blank_outputs(), "Status": "Error", "Message": str(intent),
                    "Outcome": "error"}
        with self._desk:
            if self.fault is not None:
                return {"Ref": intent.ref, **self._blank_outputs(), "Status": "Error",
                        "Message": f"not modified: {self.fault}", "Outcome": "error"}
            rec = self.journal.get(intent.ref) if intent.ref else None
            if rec is None or rec["state"] != "working":
                why = "not in the journal" if rec is None else f"{rec['status'] or rec['state']}"
                return {"Ref": intent.ref, **self.sync.outputs(intent.ref), "Outcome": "not modified",
                        "Message": f"not modified: {intent.ref or 'the row'} is {why}, not a working order"}
            return {"Ref": intent.ref, **self._amend(intent, rec)}

    # --- rows placed before: modify, release, or show the truth -------------------------------------------
    def _follow(self, item: OrderIntent | RowError) -> dict:
        """A row placed before (its Status is filled in): modified or released while its order works,
        else shown as the journal has it. Never sent as a new order."""
        rec = self.journal.get(item.ref)
        assert rec is not None                       # place() leaves out the rows the journal lacks
        if isinstance(item, RowError):
            truth = self.sync.outputs(rec["ref"], rec)
            if rec["state"] != "working":
                return {**truth, "Outcome": "unchanged"}
            return {**truth, "Message": f"not modified: {item}", "Outcome": "not modified"}
        if self._works(rec):
            return self._amend(item, rec)
        return {**self.sync.outputs(rec["ref"], rec), "Outcome": "unchanged"}

    def _works(self, rec: dict) -> bool:
        """Whether an entry's order, or a bracket child of it, is still working (a filled entry's
        TakeProfit / StopLoss children can still be modified)."""
        if rec["parent_ref"]:
            return False
        if rec["state"] == "working":
            return True
        children = (self.journal.get(rec["ref"] + suffix) for suffix in (".TP", ".SL"))
        return any(child is not None and child["state"] == "working" for child in children)

    def _amend(self, intent: OrderIntent, rec: dict) -> dict:
        """Compare the row with the working order ``rec`` (and its bracket children) and send what
        changed. Returns the outputs plus Outcome: unchanged, modified, released, not modified, or
        unconfirmed (sent, IB has not shown the new order within ack_timeout)."""
        entry_ref = rec["ref"]
        intent = replace(intent, ref=entry_ref, account=intent.account or rec["account"])
        desired = self._legs(intent)
        held = {ref: self.journal.get(ref) for ref, _, _ in desired}
        children = [r["ref"] for r in (self.journal.get(entry_ref + suffix) for suffix in (".TP", ".SL")) if r]

        def refused(message: str) -> dict:
            return {**self.sync.outputs(entry_ref), "Message": f"not modified: {message}", "Outcome": "not modified"}

        try:
            plan = amend.plan(entry_ref, desired, held, children)
        except AmendRefused as exc:
            return refused(str(exc))
        if plan.unchanged:
            return {**self.sync.outputs(entry_ref), "Outcome": "unchanged"}
        if not self.session.connected:
            return refused(f"IB 504: not connected ({self.session.status.state}); nothing was sent")
        foreign = next((leg for leg in plan.legs if leg.record["client_id"] != self.session.client_id), None)
        if foreign is not None:
            return refused(f"{foreign.ref} was placed by client {foreign.record['client_id']}; IB lets only that "
                           f"client modify it (this is client {self.session.client_id}); nothing was sent")
        try:
            details = self.contracts.qualify(f"conid:{rec['con_id']}")
            self._check_amend(intent, plan, details)
        except _Refusal as r:
            return refused(r.message)
        except (IBError, InstrumentError) as exc:
            return refused(str(exc))
        return self._send_amend(intent, plan, details.contract)

    def _check_amend(self, intent: OrderIntent, plan: AmendPlan, details) -> None:
        """Every risk rule on the new values, the working order itself left out of the exposure. While
        the entry works the whole row is checked as one order (its TakeProfit/StopLoss are its
        children's prices); once it filled, each changed child is checked on its own, except the
        position rules: the children close the filled entry, and only one of them (OCA) can fill.
        Raises _Refusal."""
        batch = self.facts.batch()
        entry = self.journal.intent(intent.ref)
        if entry["state"] == "working":
            checked, skip = [(intent, entry)], frozenset[str]()
        else:
            checked = [(_intent_of(leg.fields, intent), leg.record) for leg in plan.legs]
            skip = frozenset({"max_position", "allow_short", "max_open_orders", "max_orders_per_minute"})
        for order, rec in checked:
            facts = batch.facts(order, details, exclude_perm=rec["perm_id"], modify=True)
            result = evaluate(order, facts, self.limits)
            refusals = [c for c in result.refusals if c.rule not in skip]
            if refusals:
                raise _Refusal("Refused", "; ".join(c.message for c in refusals))

    def _send_amend(self, intent: OrderIntent, plan: AmendPlan, contract) -> dict:
        """placeOrder again for each leg of ``plan`` (one pacer job), then wait for IB's word on each."""
        entry_ref = intent.ref
        parent_id = self.journal.intent(entry_ref)["order_id"]
        kind = "release" if plan.release else "modify"
        staged = self.journal.intent(entry_ref)["fields"].get("transmit", True) is False
        orders = []
        for i, leg in enumerate(plan.legs):
            is_child = leg.ref != entry_ref
            # a release transmits as a bracket is placed (the last leg); a modification keeps the order
            # where it is: live orders stay live, orders held at TWS stay held
            transmit = i == len(plan.legs) - 1 if plan.release else not staged
            o = self._ib_order(_intent_of(leg.fields, intent), leg.record["order_id"],
                               parent_id=parent_id if is_child else 0, transmit=transmit)
            if is_child:
                o.ocaGroup, o.ocaType = f"{entry_ref}.OCA", 1
            orders.append((leg, o))
        markers = {leg.ref: self.sync.marker(leg.ref) for leg, _ in orders}
        for leg, _ in orders:
            self.journal.mark_transmitting(leg.ref, self.session.client_id, leg.record["order_id"], kind=kind,
                                           detail={k: new for k, (_, new) in leg.changes.items()})
        self.sync.expect(leg.ref for leg, _ in orders)
        self._step("modify_marked")
        handed = threading.Event()

        def send(client):
            for leg, o in orders:
                client.placeOrder(leg.record["order_id"], contract, o)
            handed.set()
        self.session.send(send, messages=len(orders), urgent=True)
        if handed.wait(10.0):
            self._step("modify_sent")
        confirmed = self.sync.wait(lambda: all(self._confirmed(leg, markers[leg.ref]) for leg, _ in orders),
                                   self.limits.ack_timeout)
        refusal = next((self.journal.intent(leg.ref)["message"] for leg, _ in orders
                        if self.sync.marker(leg.ref)[1] > markers[leg.ref][1]), None)
        what = amend.describe(plan, entry_ref)
        if refusal is not None:
            return {**self.sync.outputs(entry_ref), "Message": f"not modified: {refusal}", "Outcome": "not modified"}
        if not confirmed:
            return {**self.sync.outputs(entry_ref), "Outcome": "unconfirmed",
                    "Message": f"{kind} sent ({what or 'transmit'}); IB has not confirmed it within "
                               f"{self.limits.ack_timeout:g} s: until it does, IB holds "
                               f"{describe(self.journal.intent(entry_ref)['fields'])}"}
        for leg, _ in orders:
            self.journal.update_fields(leg.ref, {**leg.record["fields"], **leg.fields,
                                                 "transmit": leg.fields.get("transmit", True)})
        said = f"released: transmitted to IB{f' with {what}' if what else ''}" if plan.release else f"modified: {what}"
        self.journal.note(entry_ref, said)
        return {**self.sync.outputs(entry_ref), "Outcome": "released" if plan.release else "modified"}

    def _confirmed(self, leg, marker: tuple[int, int]) -> bool:
        """IB answered this leg's placeOrder: an error since ``marker``, or a new openOrder holding the
        new values (and, for a new quantity, a status that adds up to it)."""
        count, errors = self.sync.marker(leg.ref)
        if errors > marker[1]:
            return True
        if count <= marker[0]:
            return False
        rec = self.journal.intent(leg.ref)
        held = rec["fields"]
        for key, (_, new) in leg.changes.items():
            if key in ("transmit", "good_till", "outside_rth"):       # IB's openOrder does not echo them reliably
                continue
            if not amend.same(key, new, held.get(key)):
                return False
        if "quantity" in leg.changes:
            total = (rec["remaining"] or 0) + (rec["filled"] or 0)
            return abs(total - float(leg.fields["quantity"])) < 1e-9
        return True

    def kill(self) -> list[str]:
        """Engage the kill switch (persisted in the journal: it survives restarts) and cancel every
        working order this client placed. New orders are refused ("kill_switch") until
        :meth:`reset_kill`. Returns the Refs a cancel was sent for."""
        self.journal.set_kill_switch(True)
        with self._desk:
            sent = []
            for rec in self.journal.intents(("working", "transmitting")):
                if rec["order_id"] is not None and rec["client_id"] == self.session.client_id:
                    try:
                        self._send_cancel(rec)
                        sent.append(rec["ref"])
                    except IBError as exc:
                        log.warning("kill: cancel of %s not sent: %s", rec["ref"], exc)
            return sent

    def reset_kill(self) -> None:
        """Release the kill switch: orders may be placed again."""
        self.journal.set_kill_switch(False)

    @property
    def killed(self) -> bool:
        return self.journal.kill_switch

    def order(self, ref: str) -> dict:
        """One order's record for a read-only UDF: Ref, Symbol, Account, Action, Quantity, OrderType,
        State (journal state) and the output columns. Raises KeyError for an unknown Ref."""
        rec = self.journal.get(str(ref).strip())
        if rec is None:
            raise KeyError(f"Ref {ref!r} is not in the journal")
        f = rec["fields"]
        return {"Ref": rec["ref"], "Symbol": rec["symbol"], "Account": rec["account"], "Action": f.get("action"),
                "Quantity": f.get("quantity"), "OrderType": f.get("order_type"), "State": rec["state"],
                **self.sync.outputs(rec["ref"])}

    def audit(self, tz=None) -> pd.DataFrame:
        """The journal's audit trail, Time in ``tz`` (``addin.orders.audit.audit_frame``). Raises the
        desk's journal fault when the journal cannot be read (its stand-in is empty: an empty audit
        would mislead), JournalError."""
        from .audit import audit_frame
        if self.fault is not None and not isinstance(self.fault, JournalBusyError):
            raise self.fault
        return audit_frame(self.journal, tz=tz)

    def table(self) -> pd.DataFrame:
        """Every order in the journal (children included), indexed by Ref, columns
        ORDER_OUTPUT_COLUMNS, oldest first."""
        recs = self.journal.intents()
        df = pd.DataFrame([self.sync.outputs(r["ref"], r) for r in recs], columns=list(ORDER_OUTPUT_COLUMNS),
                          index=pd.Index([r["ref"] for r in recs], name="Ref"))
        return df

    def add_listener(self, fn: Callable[[str, dict], None]) -> None:
        """``fn(ref, outputs)`` on every status, fill or commission change (ibapi's message thread:
        keep it quick)."""
        self.sync.add_listener(fn)

    def remove_listener(self, fn: Callable[[str, dict], None]) -> None:
        self.sync.remove_listener(fn)

    def add_step_observer(self, fn: Callable[[str], None]) -> None:
        """``fn(step)`` each time an order passes one of ``ORDER_STEPS`` (after_ack: once per batch
        that IB answered in full) or a modification one of ``MODIFY_STEPS``. Runs on the placing
        thread with the desk's lock held: keep it quick and do not call the desk. An observer that
        raises is logged; the order goes on."""
        self._step_observers.append(fn)

    def remove_step_observer(self, fn: Callable[[str], None]) -> None:
        if fn in self._step_observers:
            self._step_observers.remove(fn)

    def _step(self, step: str) -> None:
        for fn in list(self._step_observers):
            try:
                fn(step)
            except Exception:
                log.exception("step observer failed at %s", step)

    def close(self) -> None:
        """Detach from the session and close the journal. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.session.remove_restore_hook(self._on_restore)
        self.sync.close()
        self.facts.close()
        with self._desk:
            self.journal.close()

    def __enter__(self) -> "OrderDesk":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- reconcile ------------------------------------------------------------------------------------
    def reconcile(self, timeout: float = 10.0) -> dict[str, str]:
        """Match the journal with IB: reqAllOpenOrders, reqCompletedOrders and reqExecutions (every
        answer carrying one of our Refs as orderRef updates its record). An intent still
        ``transmitting`` of which IB shows no trace becomes ``not_received`` (placing its row again
        sends it). Returns {ref: state} of the intents that were transmitting. Skipped (empty dict)
        when not connected or an answer did not arrive within ``timeout`` seconds."""
        with self._desk:
            return self.sync.reconcile(timeout, self.owner)

    def _on_restore(self) -> None:
        self.facts.on_restore()                      # cached positions/orders are stale until re-sent
        try:
            self.reconcile()
        except Exception:
            log.exception("reconcile after reconnect failed")

    # --- one order ------------------------------------------------------------------------------------
    def _place_one(self, intent: OrderIntent, batch: FactGatherer, known: dict[str, KnownOrder],
                   reused: str | None = None) -> list[str]:
        """Check, journal and send one row's order; returns its legs' Refs. ``known``: IB's record
        (:meth:`OrderSync.snapshot`); ``reused``: the Ref when it came from the row's identity."""
        rec = self.journal.get(intent.ref)
        if rec is not None and rec["state"] in BLOCKING_STATES:
            if reused:
                raise _Refusal("Refused", _possibly_sent(intent.ref))
            raise _Refusal(self.sync.outputs(intent.ref, rec)["Status"],
                           f"duplicate_ref: {intent.ref} was already sent ({rec['state']}); not sent again",
                           outcome="already sent", keep={k: v for k, v in self.sync.outputs(intent.ref, rec).items()
                                 if k not in ("Status", "Message")})
        ib = known.get(ref_key(intent.ref))
        if ib is None:
            ib = self.sync.known(intent.ref)       # shown since the snapshot (this session's own answers)
        if ib is not None and ib.blocks:           # IB's record wins over the journal's: write it back
            said = f"{intent.ref} is known at IB (permId {ib.perm_id}, status {ib.status or 'unknown'})"
            self.journal.adopt(rec["ref"] if rec else intent.ref, state=ib.state, status=ib.status or None,
                               perm_id=ib.perm_id or None, client_id=ib.client_id or None,
                               order_id=ib.order_id or None, message=f"{said}: not sent again")
            if reused:
                raise _Refusal("Refused", _possibly_sent(intent.ref))
            outputs = self.sync.outputs(intent.ref)
            raise _Refusal(outputs["Status"] or "Refused", f"duplicate_ref: {said}; not sent again",
                           outcome="already sent",
                           keep={k: v for k, v in outputs.items() if k not in ("Status", "Message")})
        if not self.session.connected:
            raise _Refusal("Error", f"IB 504: not connected ({self.session.status.state}); nothing was sent")
        accounts = self.session.status.accounts
        account = intent.account
        if not account:
            if len(accounts) != 1:
                raise _Refusal("Error", f"Account: expected one of {', '.join(accounts)} (this login manages "
                                        f"several accounts), got a blank cell")
            account = accounts[0]
        elif accounts and account not in accounts:
            raise _Refusal("Error", f"Account: {account} is not managed by this IB login (managed: "
                                    f"{', '.join(accounts)})")
        intent = replace(intent, account=account)
        try:
            details = self.contracts.qualify(intent.symbol)
        except InstrumentError as exc:
            raise _Refusal("Error", f"Symbol: {exc}") from None
        except IBError as exc:
            raise _Refusal("Error", f"Symbol: {exc}") from None
        try:
            facts = batch.facts(intent, details, ref_state=rec["state"] if rec else None)
        except IBError as exc:
            raise _Refusal("Refused", f"risk data unavailable: {exc}") from None
        result = evaluate(intent, facts, self.limits)
        if not result.ok:
            raise _Refusal("Refused", result.message)
        intent = result.intent
        contract = details.contract
        if self.limits.whatif_margin_check:
            try:
                check = self._whatif(intent, contract, batch)
            except IBError as exc:
                check = RiskCheck("whatif_margin", False, f"whatif_margin: no what-if answer from IB: {exc}")
            if not check.ok:
                raise _Refusal("Refused", check.message)
        legs = self._legs(intent)
        try:
            self.journal.record_intents(legs, account=account, symbol=format_contract(details),
                                        con_id=contract.conId, owner=self.owner)
        except DuplicateRefError as exc:
            raise _Refusal("Refused", str(exc)) from None
        self._step("after_journal")
        try:
            self._transmit(intent, legs, contract)
        except IBError as exc:                 # the connection went away: nothing left this process
            for ref, _, _ in legs:
                self.journal.set_state(ref, "not_received", f"not sent: {exc}", status="Not sent")
            raise _Refusal("Error", f"not sent: {exc}") from None
        return [ref for ref, _, _ in legs]

    def _transmit(self, intent: OrderIntent, legs: list, contract) -> None:
        """Order ids, the journal's transmitting mark, then placeOrder for every leg in one pacer job
        (a bracket's legs leave back to back). Raises IBError 504 when the session has no connection."""
        ids = [self.session.next_order_id() for _ in legs]
        orders = []
        for i, (_, fields, _) in enumerate(legs):
            o = self._ib_order(_intent_of(fields, intent), ids[i], parent_id=ids[0] if i else 0,
                               transmit=intent.transmit if i == len(legs) - 1 else False)
            if i:
                o.ocaGroup, o.ocaType = f"{intent.ref}.OCA", 1
            orders.append(o)
        try:                   # the compare-and-set: only the owner of every leg's intent may send it
            self.journal.claim([(ref, oid) for (ref, _, _), oid in zip(legs, ids)], self.session.client_id,
                               self.owner)
        except DuplicateRefError as exc:
            raise _Refusal("Refused", str(exc)) from None
        for (ref, fields, _), oid in zip(legs, ids):
            self.facts.sent(ref, oid, intent.account, contract.conId, fields["action"], float(fields["quantity"]))
        self._step("after_mark")
        done = threading.Event()

        def send(client):
            for oid, o in zip(ids, orders):
                client.placeOrder(oid, contract, o)
            done.set()
        self.sync.expect(ref for ref, _, _ in legs)
        self.session.send(send, messages=len(orders), urgent=True)
        if done.wait(10.0):               # handed to the socket (else reconcile decides later)
            self._step("after_send")

    def _legs(self, intent: OrderIntent) -> list[tuple[str, dict, str | None]]:
        """(ref, fields, parent_ref) of the entry and its bracket children."""
        legs: list[tuple[str, dict, str | None]] = [(intent.ref, intent.fields(), None)]
        opposite = "SELL" if intent.action == "BUY" else "BUY"
        base = dict(intent.fields(), action=opposite, limit_price=None, stop_price=None, trail_amount=None,
                    trail_percent=None, take_profit=None, stop_loss=None, oca_group=f"{intent.ref}.OCA")
        if intent.take_profit is not None:
            legs.append((f"{intent.ref}.TP", dict(base, ref=f"{intent.ref}.TP", order_type="LMT",
                                                  limit_price=intent.take_profit), intent.ref))
        if intent.stop_loss is not None:
            legs.append((f"{intent.ref}.SL", dict(base, ref=f"{intent.ref}.SL", order_type="STP",
                                                  stop_price=intent.stop_loss), intent.ref))
        return legs

    def _ib_order(self, intent: OrderIntent, order_id: int, *, parent_id: int, transmit: bool) -> Order:
        o = Order()
        o.orderId = order_id
        o.action, o.orderType, o.tif = intent.action, intent.order_type, intent.tif
        o.totalQuantity = Decimal(repr(intent.quantity))
        o.account, o.orderRef, o.outsideRth, o.transmit = intent.account, intent.ref, intent.outside_rth, transmit
        if intent.limit_price is not None:
            o.lmtPrice = intent.limit_price
        if intent.order_type in ("TRAIL", "TRAIL LIMIT"):
            if intent.trail_amount is not None:
                o.auxPrice = intent.trail_amount
            else:
                o.trailingPercent = intent.trail_percent       # in percent: 1.5 = 1.5%
            if intent.stop_price is not None:
                o.trailStopPrice = intent.stop_price
            if intent.offset is not None:
                o.lmtPriceOffset = intent.offset
        elif intent.order_type == "REL":
            if intent.offset is not None:
                o.auxPrice = intent.offset
        elif intent.stop_price is not None:                    # STP, STP LMT: the stop; MIT, LIT: the trigger
            o.auxPrice = intent.stop_price
        if intent.good_till:
            o.goodTillDate = intent.good_till
        if parent_id:
            o.parentId = parent_id
        if intent.oca_group and not parent_id:
            o.ocaGroup, o.ocaType = intent.oca_group, 1
        return o

    def _whatif(self, intent: OrderIntent, contract, batch: FactGatherer):
        oid = self.session.next_order_id()
        o = self._ib_order(intent, oid, parent_id=0, transmit=True)
        o.whatIf = True
        self.sync.expect_whatif(oid)
        self.session.send(lambda c: c.placeOrder(oid, contract, o))
        answer = self.sync.whatif_answer(oid, self.session.request_timeout)
        if isinstance(answer, IBError):
            return RiskCheck("whatif_margin", False, f"whatif_margin: IB refused the what-if order: {answer}")
        change = finite(getattr(answer, "initMarginChange", None)) if answer is not None else None
        funds = batch.available_funds(intent.account)
        return check_whatif(change, funds, self.limits.base_currency)

    def _send_cancel(self, rec: dict) -> None:
        oid = rec["order_id"]
        self.journal.mark_transmitting(rec["ref"], self.session.client_id, oid, kind="cancel")
        self.session.send(lambda c: c.cancelOrder(oid, OrderCancel()))

    # --- outputs --------------------------------------------------------------------------------------
    @staticmethod
    def _blank_outputs() -> dict:
        return {c: None for c in ORDER_OUTPUT_COLUMNS}

    def _frame(self, refs: list[str], notes: dict[str, str]) -> pd.DataFrame:
        rows = []
        for ref in refs:
            o = self.sync.outputs(ref)
            if ref in notes:
                o["Message"] = notes[ref]
            rows.append(o)
        return pd.DataFrame(rows, columns=list(ORDER_OUTPUT_COLUMNS), index=pd.Index(refs, name="Ref"))

    @staticmethod
    def _put(out: dict, label, ref: str, **values) -> None:
        out.setdefault(label, {}).update(Ref=ref, **values)


def _frame(rows: pd.DataFrame, out: dict[Hashable, dict[str, Any]]) -> pd.DataFrame:
    """The outputs frame: one row per row of ``rows`` (same index), blank where ``out`` has nothing."""
    blank = dict.fromkeys(OUTPUT_FRAME_COLUMNS + ("Outcome",))
    return pd.DataFrame([{**blank, **out.get(label, {})} for label in rows.index], index=rows.index,
                        columns=[*OUTPUT_FRAME_COLUMNS, "Outcome"], dtype=object)


def _possibly_sent(ref: str) -> str:
    return (f"possibly already sent as {ref}: put {ref} in the row to track it, or give the row a new Ref to "
            f"send it again")


class _Refusal(Exception):
    def __init__(self, status: str, message: str, keep: dict | None = None, outcome: str = ""):
        super().__init__(message)
        self.status, self.message, self.keep = status, message, keep
        self.outcome = outcome or {"Refused": "refused", "Not sent": "not sent"}.get(status, "error")


def _intent_of(fields: dict, entry: OrderIntent) -> OrderIntent:
    return OrderIntent(row=entry.row, **{k: v for k, v in fields.items() if k in OrderIntent.__dataclass_fields__})


