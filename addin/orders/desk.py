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
from ..ib.contracts import InstrumentError, format_contract, parse
from ..ib.session import IBError
from .facts import DeskFacts, FactGatherer, finite
from .journal import BLOCKING_STATES, DuplicateRefError, Journal, JournalBusyError, JournalError
from .refs import Owner, ref_key, row_identity
from .risk import RiskCheck, RiskLimits, check_whatif, evaluate
from .rows import ORDER_INPUT_COLUMNS, ORDER_OUTPUT_COLUMNS, OrderIntent, RowError, new_ref, parse_row, parse_rows
from .sync import KnownOrder, OrderSync, order_version

log = logging.getLogger(__name__)

__all__ = ["OrderDesk", "ORDER_STEPS", "OUTPUT_FRAME_COLUMNS"]

# An order's way out, as step observers see it: its intent is in the journal; it is marked transmitting
# (order ids taken); its placeOrder was handed to the socket; IB answered every order of the batch.
ORDER_STEPS = ("after_journal", "after_mark", "after_send", "after_ack")
OUTPUT_FRAME_COLUMNS = ("Ref",) + ORDER_OUTPUT_COLUMNS
SNAPSHOT_TIMEOUT = 10.0        # seconds IB may take to show its record before place() sends nothing
_MODIFIABLE = {"quantity", "limit_price", "stop_price", "trail_amount", "trail_percent", "transmit"}


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
              source: str = "") -> pd.DataFrame:
        """Turn Orders-table rows into orders. Returns one row of outputs per input row, indexed like
        ``rows``, columns Ref + ORDER_OUTPUT_COLUMNS. Rows with a blank Ref get one (see
        ``addin.orders.rows.new_ref``); ``write_refs({index label: ref})`` is called with them before
        anything is sent (the Excel side writes them into the sheet; if it raises, those rows are not sent).
        The assigned Ref is recorded in the journal first, under the row's identity (``source``: the
        workbook and Table, ``orders.xlsm!Orders``, "" when unknown; the row's label; its order
        fields): a row that comes back blank reuses it while it was never sent and is refused once it
        was (module docstring).
        A Ref already transmitting, working or done, or known at IB, is not sent again: its row shows
        its state and a ``duplicate_ref`` message. Never raises for bad rows, IB refusals or a faulty
        journal: they are in Message."""
        with self._desk:
            out: dict[Hashable, dict[str, Any]] = {}     # the frame is built after sending: it is slow
            parsed = parse_rows(rows)
            if isinstance(self.fault, JournalBusyError):
                self._reopen()
            if self.fault is not None:
                return self._refuse_all(rows, parsed, "Error", str(self.fault))
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
                self._put(out, label, "", Status="Refused", Message=_possibly_sent(ref))
                del parsed[label]
            known: dict[str, KnownOrder] | None = {}
            if self.session.connected and any(isinstance(r, OrderIntent) for r in parsed.values()):
                known = self.sync.snapshot(SNAPSHOT_TIMEOUT)     # fresh: after the Refs, before any send
            batch = self.facts.batch()
            sent: list[str] = []
            for label, item in parsed.items():
                if isinstance(item, RowError):
                    self._put(out, label, item.ref, Status="Error", Message=str(item))
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
                    self._put(out, label, item.ref, Status="Error", Message=f"not sent: {exc}")
                    continue
                except _Refusal as r:
                    self._put(out, label, item.ref, Status=r.status, Message=r.message,
                              **({} if r.keep is None else r.keep))
                    continue
                sent.extend(refs)
                self._put(out, label, item.ref, **self._outputs(item.ref))
            if sent:
                self.sync.wait_answers(sent, self.limits.ack_timeout)
                if self.sync.answered(sent):
                    self._step("after_ack")
                for label, item in parsed.items():
                    if isinstance(item, OrderIntent) and item.ref in sent:
                        self._put(out, label, item.ref, **self._outputs(item.ref))
            return _frame(rows, out)

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
        return _frame(rows, {label: {"Ref": item.ref, "Status": status, "Message": message}
                             for label, item in parsed.items()})

    def cancel(self, refs: str | Iterable[str]) -> pd.DataFrame:
        """Cancel the working orders of these Refs (a bracket's entry cancels its children at IB).
        Returns the outputs indexed by Ref after IB's answers (or ``ack_timeout``); unknown or done
        Refs say so in Message."""
        refs = [refs] if isinstance(refs, str) else [str(r).strip() for r in refs]
        notes: dict[str, str] = {}
        with self._desk:
            waiting = []
            for ref in refs:
                rec = self.journal.get(ref)
                if rec is None:
                    notes[ref] = f"Ref: {ref!r} is not in the journal"
                elif rec["state"] not in ("working", "transmitting") or rec["order_id"] is None:
                    notes[ref] = f"not cancelled: the order is {rec['status'] or rec['state']}"
                else:
                    self._send_cancel(rec)
                    waiting.append(ref)
            self.sync.wait(lambda: all(self.journal.intent(r)["state"] not in ("working", "transmitting")
                                       for r in waiting),
                           self.limits.ack_timeout)
        return self._frame(refs, notes)

    def cancel_all(self) -> None:
        """reqGlobalCancel: every open order of the account(s), from every client and TWS."""
        self.journal.mark_transmitting("*", self.session.client_id, 0, kind="global_cancel")
        self.session.send(lambda c: c.reqGlobalCancel(OrderCancel()))

    def modify(self, row: pd.Series | Mapping[str, Any]) -> dict:
        """Change the Quantity, LimitPrice, StopPrice, TrailAmount or TrailPercent of a working order
        from its row (same Ref), or transmit an order placed with Transmit FALSE (same order id, IB's
        modify). Every risk rule is applied to the new order; other columns must be
        unchanged. Returns the row's outputs (Message says why when nothing was sent)."""
        values = dict(row) if not isinstance(row, pd.Series) else row.to_dict()
        values = {" ".join(str(k).split()).lower(): v for k, v in values.items()}
        intent = parse_row({c: values.get(c.lower()) for c in ORDER_INPUT_COLUMNS}, None)
        if isinstance(intent, RowError):
            return {"Ref": intent.ref, **self._blank_outputs(), "Status": "Error", "Message": str(intent)}
        with self._desk:
            if self.fault is not None:
                return {"Ref": intent.ref, **self._blank_outputs(), "Status": "Error",
                        "Message": f"not modified: {self.fault}"}
            rec = self.journal.get(intent.ref) if intent.ref else None
            if rec is None or rec["state"] != "working":
                why = "not in the journal" if rec is None else f"{rec['status'] or rec['state']}"
                return {"Ref": intent.ref, **self.sync.outputs(intent.ref),
                        "Message": f"not modified: {intent.ref or 'the row'} is {why}, not a working order"}
            old = rec["fields"]
            changed = [k for k, v in intent.fields().items() if k not in _MODIFIABLE and k != "ref"
                       and not _same(k, v, old.get(k)) and not (k == "account" and not intent.account)]
            if changed:
                return {"Ref": intent.ref, **self.sync.outputs(intent.ref),
                        "Message": f"not modified: {changed[0]} differs from the working order; only Quantity, "
                                   f"prices and Transmit can change (cancel and place a new row)"}
            if rec["client_id"] != self.session.client_id:
                return {"Ref": intent.ref, **self.sync.outputs(intent.ref),
                        "Message": f"not modified: placed by client {rec['client_id']}, not this one"}
            intent = replace(intent, account=rec["account"])
            try:
                details = self.contracts.qualify(f"conid:{rec['con_id']}")
                batch = self.facts.batch()
                facts = batch.facts(intent, details, exclude_perm=rec["perm_id"], modify=True)
                result = evaluate(intent, facts, self.limits)
            except (IBError, InstrumentError) as exc:
                return {"Ref": intent.ref, **self.sync.outputs(intent.ref), "Message": f"not modified: {exc}"}
            if not result.ok:
                return {"Ref": intent.ref, **self.sync.outputs(intent.ref),
                        "Message": "not modified: " + result.message}
            intent = result.intent
            order = self._ib_order(intent, rec["order_id"], parent_id=0, transmit=intent.transmit)
            self.journal.mark_transmitting(intent.ref, self.session.client_id, rec["order_id"], kind="modify",
                                           detail=intent.fields())
            new_values = {k: v for k, v in intent.fields().items() if k in _MODIFIABLE}
            self.journal.update_fields(intent.ref, {**old, **new_values})
            contract = details.contract
            version = order_version(order.totalQuantity, order.lmtPrice, order.auxPrice)
            marker = self.sync.marker(intent.ref)
            self.session.send(lambda c, oid=rec["order_id"], k=contract, o=order: c.placeOrder(oid, k, o))
            self.sync.wait(lambda: self.sync.modified(intent.ref, marker, version, intent.quantity),
                           self.limits.ack_timeout)
            return {"Ref": intent.ref, **self.sync.outputs(intent.ref)}

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
        that IB answered in full). Runs on the placing thread with the desk's lock held: keep it quick
        and do not call the desk. An observer that raises is logged; the order goes on."""
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
                           keep={k: v for k, v in self.sync.outputs(intent.ref, rec).items()
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
        if intent.order_type == "TRAIL":
            if intent.trail_amount is not None:
                o.auxPrice = intent.trail_amount
            else:
                o.trailingPercent = intent.trail_percent
            if intent.stop_price is not None:
                o.trailStopPrice = intent.stop_price
        elif intent.stop_price is not None:
            o.auxPrice = intent.stop_price
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


def _same(key: str, new: Any, old: Any) -> bool:
    """Whether a modify leaves this field as it is (the Symbol compares as an instrument, not as text)."""
    if key == "symbol":
        try:
            return parse(str(new)) == parse(str(old))
        except InstrumentError:
            return False
    return new == old


def _frame(rows: pd.DataFrame, out: dict[Hashable, dict[str, Any]]) -> pd.DataFrame:
    """The outputs frame: one row per row of ``rows`` (same index), blank where ``out`` has nothing."""
    blank = dict.fromkeys(OUTPUT_FRAME_COLUMNS)
    return pd.DataFrame([{**blank, **out.get(label, {})} for label in rows.index], index=rows.index,
                        columns=list(OUTPUT_FRAME_COLUMNS), dtype=object)


def _possibly_sent(ref: str) -> str:
    return (f"possibly already sent as {ref}: put {ref} in the row to track it, or give the row a new Ref to "
            f"send it again")


class _Refusal(Exception):
    def __init__(self, status: str, message: str, keep: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.keep = status, message, keep


def _intent_of(fields: dict, entry: OrderIntent) -> OrderIntent:
    return OrderIntent(row=entry.row, **{k: v for k, v in fields.items() if k in OrderIntent.__dataclass_fields__})


