"""IB's side of the orders, written into the journal: order events as they happen and the reconcile.

:class:`OrderSync` listens on the session (openOrder, orderStatus, execDetails,
commissionAndFeesReport, completedOrder, their End messages and errors for order ids), matches every
message to a Ref (orderRef on openOrder, completedOrder and executions; permId or this client's order
id on orderStatus and errors), records it in the :class:`~addin.orders.journal.Journal`, and tells the
desk's listeners ``(ref, outputs)``. Refs match by :func:`addin.orders.refs.ref_key` (trimmed, any
case). Messages about orders that are not in the journal (other clients', TWS's) change no record,
but every orderRef IB shows is remembered (:meth:`OrderSync.known`): IB is the authority on what was
sent, whatever the journal says.

:meth:`OrderSync.snapshot` asks IB for everything it knows (reqAllOpenOrders: every client's working
orders, reqCompletedOrders, reqExecutions) and returns ``{ref_key: KnownOrder}``; the desk takes one
before it sends anything. :meth:`OrderSync.reconcile` takes one and marks intents that were
``transmitting`` but of which IB shows no trace as ``not_received``: only those this process claimed
or whose owner process has ended (another live ibxl may be about to send its own).

The output columns of a Ref are built here (:meth:`OrderSync.outputs`), from the journal only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ibapi.execution import ExecutionFilter

from ..ib.events import Event
from ..ib.session import IBError, Request
from ..protocol.errors import ORDER_CANCELLED
from .amend import held_fields
from .facts import finite
from .journal import Journal, state_of_status
from .refs import Owner, parent_key, ref_key
from .rows import ORDER_OUTPUT_COLUMNS

log = logging.getLogger(__name__)

__all__ = ["OrderSync", "KnownOrder"]

_STATUS_OF_STATE = {"intent_written": "Not sent", "not_received": "Not sent", "rejected": "Rejected",
                    "transmitting": "Transmitted"}


@dataclass(frozen=True)
class KnownOrder:
    """An order IB showed with this orderRef (any client): ``ref`` as IB has it, permId (0 unknown),
    IB's status ("Filled" for one seen only through its executions), client and order id."""

    ref: str
    perm_id: int
    status: str
    client_id: int
    order_id: int

    @property
    def state(self) -> str:
        """The journal state it stands for (``working`` when IB's word changes none)."""
        return state_of_status(self.status) or "working"

    @property
    def blocks(self) -> bool:
        """Whether the Ref counts as sent: everything but an order IB refused (Inactive)."""
        return self.state != "rejected"


class OrderSync:
    """Journal updates from IB's order messages on ``session``, for this ``client_id``'s order ids.
    Thread-safe; callbacks run on ibapi's message thread and are kept short."""

    def __init__(self, session, journal: Journal):
        self.session, self.journal = session, journal
        self.cond = threading.Condition()             # every answer notifies it (waits use it)
        self._answered: set[str] = set()              # refs IB has said something about since expect()
        self._ends = {"openOrderEnd": 0, "completedOrdersEnd": 0}
        self._whatif: dict[int, Any] = {}             # order id -> OrderState or IBError (None: waiting)
        self._open_orders_seen: dict[str, int] = {}   # ref -> openOrder messages seen (a modify's marker)
        self._errors: dict[str, int] = {}             # ref -> order errors IB sent
        self._known: dict[str, KnownOrder] = {}       # ref_key (and a child's parent key) -> what IB showed
        self._listeners: list[Callable[[str, dict], None]] = []
        self._closed = False
        self._io = threading.Lock()                   # callbacks vs close(): the journal stays open while used
        events = session.events
        handlers: list[tuple[Event, Callable[..., None]]] = [
            (events.openOrder, self._on_open_order), (events.orderStatus, self._on_order_status),
            (events.execDetails, self._on_exec), (events.commissionAndFeesReport, self._on_commission),
            (events.completedOrder, self._on_completed),
            (events.completedOrdersEnd, self._on_end("completedOrdersEnd")),
            (events.openOrderEnd, self._on_end("openOrderEnd")), (events.error, self._on_error)]
        self._callbacks = [(event, self._guarded(fn)) for event, fn in handlers]
        for event, fn in self._callbacks:
            event.subscribe(fn)

    def close(self) -> None:
        """Stop listening; after this no callback touches the journal."""
        for event, fn in self._callbacks:
            event.unsubscribe(fn)
        with self._io:
            self._closed = True

    def _guarded(self, fn):
        def callback(*args):
            with self._io:
                if not self._closed:
                    fn(*args)
        return callback

    # --- outputs and listeners ------------------------------------------------------------------------
    def outputs(self, ref: str, rec: dict | None = None) -> dict:
        """The output columns of ``ref`` from the journal (all None for an unknown Ref)."""
        rec = rec or self.journal.get(ref)
        if rec is None:
            return {c: None for c in ORDER_OUTPUT_COLUMNS}
        state = rec["state"]
        if state in ("intent_written", "not_received"):
            status = _STATUS_OF_STATE[state]
        else:
            status = rec["status"] or _STATUS_OF_STATE.get(state, state)
        filled, avg = rec["filled"], rec["avg_fill_price"]
        if avg is None or not filled:            # an auction fill or one seen only in executions: the journal's fills
            fills = self.journal.fills(ref)
            shares = sum(f["shares"] or 0.0 for f in fills)
            if shares > 0:
                if avg is None:
                    avg = sum((f["shares"] or 0.0) * (f["price"] or 0.0) for f in fills) / shares
                filled = filled or shares
        return {"Status": status, "OrderId": rec["order_id"], "PermId": rec["perm_id"] or None,
                "Filled": filled, "Remaining": rec["remaining"], "AvgFillPrice": avg,
                "Commission": self.journal.commission(ref), "Message": rec["message"],
                "Updated": datetime.fromisoformat(rec["updated"])}

    def add_listener(self, fn: Callable[[str, dict], None]) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[str, dict], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def notify(self, ref: str) -> None:
        if not self._listeners:
            return
        outputs = self.outputs(ref)
        for fn in list(self._listeners):
            try:
                fn(ref, outputs)
            except Exception:
                log.exception("order listener failed")

    # --- waiting ----------------------------------------------------------------------------------------
    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` (checked after every answer) or ``timeout`` seconds."""
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def expect(self, refs: Iterable[str]) -> None:
        """Forget earlier answers for these Refs (they are about to be sent)."""
        with self.cond:
            self._answered.difference_update(ref_key(r) for r in refs)

    def answered(self, refs: Iterable[str]) -> bool:
        with self.cond:
            return all(ref_key(r) in self._answered for r in refs)

    def wait_answers(self, refs: list[str], timeout: float) -> bool:
        """Until IB said something (openOrder, orderStatus or an error) about every Ref."""
        return self.wait(lambda: all(ref_key(r) in self._answered for r in refs), timeout)

    def marker(self, ref: str) -> tuple[int, int]:
        """(openOrders seen, errors seen) for ``ref``: taken before a modify or cancel, compared after it
        (a new openOrder: IB showed the order again; a new error: IB refused)."""
        with self.cond:
            return self._open_orders_seen.get(ref_key(ref), 0), self._errors.get(ref_key(ref), 0)

    def expect_whatif(self, order_id: int) -> None:
        with self.cond:
            self._whatif[order_id] = None

    def whatif_answer(self, order_id: int, timeout: float):
        """IB's OrderState for the whatIf order (IBError when refused, None on timeout)."""
        self.wait(lambda: self._whatif.get(order_id) is not None, timeout)
        with self.cond:
            return self._whatif.pop(order_id, None)

    # --- IB's record -----------------------------------------------------------------------------------
    def known(self, ref: str) -> KnownOrder | None:
        """What IB showed (since this session began) for ``ref`` or one of its bracket children."""
        with self.cond:
            return self._known.get(ref_key(ref))

    def snapshot(self, timeout: float = 10.0) -> dict[str, KnownOrder] | None:
        """Ask IB for every order it knows (reqAllOpenOrders, reqCompletedOrders, reqExecutions) and
        return ``{ref_key: KnownOrder}`` of every orderRef seen (a child's also under its parent's
        key). None when not connected or an answer did not arrive within ``timeout`` seconds."""
        if not self.session.connected:
            return None
        with self.cond:
            ends = dict(self._ends)
        try:
            self.session.send(lambda c: c.reqAllOpenOrders())
            self.session.send(lambda c: c.reqCompletedOrders(False))
            request = Request("executions", lambda c, rid: c.reqExecutions(rid, ExecutionFilter()),
                              end="execDetailsEnd", on_event=self._on_exec_row, timeout=timeout)
            self.session.submit(request).result(timeout + 5)
        except IBError as exc:
            log.warning("IB's order record incomplete: %s", exc)
            return None
        if not self.wait(lambda: all(self._ends[k] > ends[k] for k in ends), timeout):
            log.warning("IB's order record incomplete: no openOrderEnd/completedOrdersEnd within %s s", timeout)
            return None
        with self.cond:
            return dict(self._known)

    def reconcile(self, timeout: float = 10.0, owner: Owner | None = None) -> dict[str, str]:
        """See :meth:`addin.orders.desk.OrderDesk.reconcile`. ``owner``: this desk's; a transmitting
        intent another live process claimed is left to it."""
        if not self.session.connected:
            return {}
        pending = {r["ref"] for r in self.journal.intents(("transmitting",))}
        known = self.snapshot(timeout)
        if known is None:
            return {}
        result = {}
        for ref in pending:
            rec = self.journal.intent(ref)
            holder = Owner.parse(rec.get("owner"))
            decidable = holder is None or holder.gone() or (owner is not None and holder.same_process(owner))
            if rec["state"] == "transmitting" and ref_key(ref) not in known and decidable:
                self.journal.set_state(ref, "not_received", "IB has no trace of this order: it was not sent; "
                                                            "place the row again to send it", status="Not sent")
                self.notify(ref)
            result[ref] = self.journal.intent(ref)["state"]
        return result

    # --- IB's callbacks (ibapi's message thread) ----------------------------------------------------------
    def _answer(self, ref: str) -> None:
        with self.cond:
            self._answered.add(ref_key(ref))
            self.cond.notify_all()
        self.notify(ref)

    def _ours(self, ref: str) -> bool:
        return bool(ref) and self.journal.get(ref) is not None

    def _note(self, ref: str, perm_id: int, status: str, client_id: int, order_id: int) -> None:
        """Remember an orderRef IB showed (any client); a later, more telling status replaces one seen
        only through executions."""
        if not ref or not str(ref).strip():
            return
        seen = KnownOrder(str(ref).strip(), int(perm_id or 0), str(status or ""), int(client_id or 0),
                          int(order_id or 0))
        own, parent = ref_key(ref), parent_key(ref)
        with self.cond:
            if seen.status or own not in self._known:
                self._known[own] = seen
            if parent != own:                        # a child tells that its parent was sent too
                self._known.setdefault(parent, seen)

    def _on_open_order(self, order_id, contract, order, state) -> None:
        if getattr(order, "whatIf", False):
            with self.cond:
                if order_id in self._whatif:
                    self._whatif[order_id] = state
                    self.cond.notify_all()
            return
        ref = order.orderRef
        self._note(ref, order.permId, state.status, order.clientId, order_id)
        if not self._ours(ref):
            return
        self.journal.set_ids(ref, order_id=order_id, perm_id=order.permId, client_id=order.clientId)
        rec = self.journal.get(ref)
        if rec is not None and rec["fields"].get("order_type"):       # what IB holds, for modify and the rows
            self.journal.hold(ref, held_fields(rec["fields"], order))
        with self.cond:
            key = ref_key(ref)
            self._open_orders_seen[key] = self._open_orders_seen.get(key, 0) + 1
        if state.status:
            self.journal.record_status(ref, state.status, perm_id=order.permId)
        self._answer(ref)

    def _on_order_status(self, order_id, status, filled, remaining, avg_fill_price, perm_id, parent_id,
                         last_fill_price, client_id, why_held, mkt_cap_price) -> None:
        ref = self.journal.by_perm_id(perm_id) or self.journal.by_order_id(client_id or self.session.client_id,
                                                                            order_id)
        if ref is None:
            return
        self.journal.record_status(ref, status, finite(filled), finite(remaining), finite(avg_fill_price) or None,
                                   perm_id=perm_id)
        self._answer(ref)

    def _on_completed(self, contract, order, state) -> None:
        ref = order.orderRef
        self._note(ref, order.permId, state.status, order.clientId, order.orderId)
        if not self._ours(ref):
            return
        filled, total = finite(order.filledQuantity), finite(order.totalQuantity)
        if filled is None and state.status == "Filled":      # IB left filledQuantity unset: all of it
            filled = total
        remaining = max(total - filled, 0.0) if filled is not None and total is not None else None
        self.journal.set_ids(ref, perm_id=order.permId)
        self.journal.record_status(ref, state.status, filled, remaining, perm_id=order.permId)
        self._answer(ref)

    def _on_exec_row(self, request, name, args) -> bool:
        if name == "execDetails":
            with self._io:
                if not self._closed:
                    self._on_exec(*args)
        return False

    def _on_exec(self, req_id, contract, execution) -> None:
        ref = execution.orderRef
        if ref and self.known(ref) is None:
            self._note(ref, execution.permId, "Filled", execution.clientId, execution.orderId)
        if not self._ours(ref):
            return
        if self.journal.record_fill(execution.execId, ref, order_id=execution.orderId, perm_id=execution.permId,
                                    time_text=execution.time, side=execution.side, shares=float(execution.shares),
                                    price=execution.price):
            self.notify(ref)

    def _on_commission(self, report) -> None:
        ref = self.journal.ref_of_exec(report.execId)
        if ref is None:
            return
        if self.journal.record_commission(report.execId, float(report.commissionAndFees), report.currency,
                                          finite(report.realizedPNL)):
            self.notify(ref)

    def _on_end(self, name: str):
        def on_end(*args):
            with self.cond:
                self._ends[name] += 1
                self.cond.notify_all()
        return on_end

    def _on_error(self, req_id, code, text, advanced="") -> None:
        if req_id is None or req_id < 0:
            return
        with self.cond:
            if req_id in self._whatif:
                self._whatif[req_id] = IBError(code, text)
                self.cond.notify_all()
                return
        ref = self.journal.by_order_id(self.session.client_id, req_id)
        if ref is None:
            return
        rec = self.journal.intent(ref)
        with self.cond:
            self._errors[ref_key(ref)] = self._errors.get(ref_key(ref), 0) + 1
        message = f"IB {code}: {text}"
        if code == ORDER_CANCELLED:                  # cancelled: the status says it; keep IB's words
            self.journal.record_status(ref, "Cancelled", message=message)
        elif rec["state"] == "transmitting":
            self.journal.set_state(ref, "rejected", message, status="Rejected")
        else:                                        # a refused modify or cancel: the order stands
            self.journal.record_status(ref, rec["status"] or "Submitted", message=message)
        self._answer(ref)
