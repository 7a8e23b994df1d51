"""The audit trail of every order: what the order journal recorded, one row per event, newest first.

Where each event comes from (:mod:`addin.orders.journal`):

================  ===========================================================================================
``intent``        ``intents``: the order as the row asked for it, at the time its (latest) intent was written
``place``         ``transmissions`` kind place: placeOrder handed to IB, with the fields sent
``modify``        ``transmissions`` kind modify: the new values (a modified order keeps its order id)
``cancel``        ``transmissions`` kind cancel: cancelOrder handed to IB
``global_cancel`` ``transmissions`` kind global_cancel: reqGlobalCancel (every open order; Ref ``*``)
``status``        ``statuses``: every order status IB reported (or ibxl set: Not sent, Rejected)
``fill``          ``fills``: one execution
``commission``    ``commissions``: IB's commission report of an execution, shown right after it
================  ===========================================================================================

Times: the journal's own are UTC to the microsecond. A fill's is IB's execution time text (whole
seconds; a text naming no zone is read in this machine's zone, where TWS runs, as is one naming a zone
IB would not resolve). Within its second a fill is placed after the events that must precede it (the
intent, its order's place and modify transmissions, the statuses that report less filled), so the
trail reads in causal order even when the order filled within the second it was sent. A fill whose time
text cannot be read at all has no Time and keeps that place (after those events, in the order the fills
were recorded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

import pandas as pd
from dateutil import tz as dateutil_tz

from ..protocol.times import IBTimeError, UnknownZoneError, ib_zone, read_time, without_zone
from .amend import COLUMN_OF
from .journal import Journal
from .refs import ref_key

__all__ = ["AUDIT_COLUMNS", "EVENTS", "audit_frame", "resolve_zone"]

AUDIT_COLUMNS = ("Time", "Ref", "Event", "Symbol", "Action", "Quantity", "Price", "Status", "Detail", "OrderId",
                 "PermId")
# Event names, in the order they sort when two carry the same time.
EVENTS = ("intent", "place", "modify", "cancel", "global_cancel", "status", "fill", "commission")
_RANK = {name: i for i, name in enumerate(EVENTS)}
_CHILDREN = (".TP", ".SL")
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_SECOND = timedelta(seconds=1)
# Order fields a modify may change (OrderDesk.modify), with the Orders column that shows them.
_SIDES = {"BOT": "BUY", "SLD": "SELL"}


def resolve_zone(tz: str | tzinfo | None) -> tzinfo:
    """The zone to show times in: an IANA or IB zone name (``Asia/Tokyo``, ``US/Eastern``, ``UTC``), a
    tzinfo, or None for this machine's local zone (with its daylight-saving rules). Raises
    UnknownZoneError (a ValueError) for a name no zone database knows."""
    if tz is None:
        return dateutil_tz.tzlocal()
    return ib_zone(tz) if isinstance(tz, str) else tz


def audit_frame(journal: Journal, ref: str | None = None, since: datetime | date | None = None,
                tz: str | tzinfo | None = None) -> pd.DataFrame:
    """Every event the journal recorded, one row each, newest first (module docstring for the events).

    ref: only this Ref and its bracket children (``Ref.TP``, ``Ref.SL``, or any intent naming it as
    parent), compared trimmed and in any case; a global cancel is included when it falls between the
    family's first and last event. since: only events at or after it (a date: its midnight in ``tz``;
    a naive datetime: wall time in ``tz``). tz: the zone Time is shown in (:func:`resolve_zone`).

    Columns ``AUDIT_COLUMNS``: Time (tz-aware in ``tz``; NaT for a fill whose IB time cannot be read),
    Ref (the journal's spelling), Event, Symbol (as the journal qualified it), Action (BUY/SELL),
    Quantity (shares/contracts: ordered, or executed for a fill), Price (limit, else stop, price asked;
    the execution price of a fill; the average fill price of a status), Status (IB's status text, on
    status events), Detail (text), OrderId, PermId (Int64: the event's own, else the order's latest).
    Reads under the journal's lock, query by query. Raises KeyError when ``ref`` is given and the
    journal holds nothing of it, UnknownZoneError (a ValueError) for an unknown ``tz`` name,
    JournalError when the journal cannot be read."""
    zone = resolve_zone(tz)
    intents = {ref_key(r["ref"]): r for r in journal.intents()}
    keys = None if ref is None else _family(ref, intents)
    rows = _TrailRows.read(journal, keys)
    wanted = (set(intents) if keys is None else keys & set(intents)) | rows.refs()
    events = [e for key in sorted(wanted) for e in _events_of(key, intents.get(key), rows)]
    if ref is not None:
        if not events:
            raise KeyError(f"Ref {str(ref).strip()!r} is not in the order journal")
        events += _global_cancels_during(journal, events)
    if since is not None:
        start = _instant(since, zone)
        events = [e for e in events if e.key >= start]
    events.sort(key=lambda e: (e.key, e.rank, e.seq), reverse=True)
    return _frame(events, zone)


# --- reading ------------------------------------------------------------------------------------------
def _family(ref: str, intents: dict[str, dict]) -> set[str]:
    """The keys of a Ref and its bracket children."""
    key = ref_key(ref)
    children = {k for k, rec in intents.items() if ref_key(rec.get("parent_ref")) == key}
    return {key, *(key + suffix for suffix in _CHILDREN), *children}


@dataclass
class _TrailRows:
    """The journal rows of some Refs (of every Ref when read with ``keys`` None), by Ref key, each list
    in the order it was recorded."""

    transmissions: dict[str, list[dict]]
    statuses: dict[str, list[dict]]
    fills: dict[str, list[dict]]

    @classmethod
    def read(cls, journal: Journal, keys: set[str] | None) -> _TrailRows:
        def grouped(fetch) -> dict[str, list[dict]]:
            found = fetch(None) if keys is None else [r for k in sorted(keys) for r in fetch(k)]
            out: dict[str, list[dict]] = {}
            for r in found:
                out.setdefault(ref_key(r["ref"]), []).append(r)
            return out
        return cls(grouped(journal.transmissions), grouped(journal.statuses), grouped(journal.fills_recorded))

    def refs(self) -> set[str]:
        return set(self.transmissions) | set(self.statuses) | set(self.fills)


def _global_cancels_during(journal: Journal, events: list[_TrailEvent]) -> list[_TrailEvent]:
    """The global cancels between the first and the last of ``events`` (one Ref's trail)."""
    first, last = min(e.key for e in events), max(e.key for e in events)
    return [e for e in _events_of("*", None, _TrailRows({"*": journal.transmissions("*")}, {}, {}))
            if first <= e.key <= last]


# --- events -------------------------------------------------------------------------------------------
@dataclass
class _TrailEvent:
    key: datetime          # where it sorts (UTC)
    rank: int              # ties: intent before place before ... before commission (EVENTS)
    seq: int               # ties again: the order the rows were recorded in (the table's id)
    time: datetime | None  # what Time shows (UTC); None when unknown
    values: dict[str, Any]


class _TrailOrder:
    """One Ref's intent, as every event of it describes it."""

    def __init__(self, key: str, rec: dict | None):
        self.rec = rec or {}
        self.fields: dict = self.rec.get("fields") or {}
        self.ref = self.rec.get("ref") or key

    def values(self, event: str, **values: Any) -> dict[str, Any]:
        """The row of one event: the order's Ref, Symbol, Action and ids, overridden by ``values``."""
        base = {"Ref": self.ref, "Event": event, "Symbol": self.rec.get("symbol") or self.fields.get("symbol"),
                "Action": self.fields.get("action"), "OrderId": self.rec.get("order_id"),
                "PermId": self.rec.get("perm_id")}
        return {**base, **{k: v for k, v in values.items() if v is not None or k not in ("OrderId", "PermId")}}


def _events_of(key: str, rec: dict | None, rows: _TrailRows) -> list[_TrailEvent]:
    order = _TrailOrder(key, rec)
    events: list[_TrailEvent] = []
    transmissions = rows.transmissions.get(key, [])
    created = _journal_time(order.rec.get("created"))
    if rec is not None and created is not None:
        place = _first_place(transmissions, created)
        asked = _decode(place["detail"]) if place else {}
        # a modify rewrote the intent's fields; a bracket's legs tie as their places do
        events.append(_event(created, "intent", place["id"] if place else 0,
                             order.values("intent", **_intent_values(order, asked or order.fields))))
    previous = None                                 # the fields last sent, for a modify's changes
    for t in transmissions:
        when = _journal_time(t["time"]) or datetime.fromtimestamp(t["epoch"], UTC)
        detail = _decode(t.get("detail"))
        values, previous = _transmission_values(order, t, detail, previous)
        events.append(_event(when, t["kind"], t["id"], order.values(t["kind"], **values)))
    statuses = rows.statuses.get(key, [])
    for s in statuses:
        stamp = _journal_time(s["time"])
        if stamp is not None:
            events.append(_event(stamp, "status", s["id"], order.values("status", **_status_values(s))))
    events += _fill_events(order, rows.fills.get(key, []), statuses, events)
    return events


def _event(when: datetime, name: str, seq: int, values: dict[str, Any]) -> _TrailEvent:
    return _TrailEvent(when, _RANK.get(name, len(_RANK)), seq, when, values)


def _first_place(transmissions: list[dict], created: datetime) -> dict | None:
    """The first place transmission of the intent written at ``created`` (None before it was sent)."""
    for t in transmissions:
        when = _journal_time(t["time"])
        if t["kind"] == "place" and when is not None and when >= created:
            return t
    return None


def _intent_values(order: _TrailOrder, f: dict) -> dict[str, Any]:
    if order.fields.get("source") == "IB":                 # written by reconcile from IB's record, not from a row
        return {"Detail": f"known at IB, not placed through this journal: {order.rec.get('message') or ''}".strip()}
    attempts = order.rec.get("attempts") or 1
    return {"Quantity": f.get("quantity"), "Price": _asked_price(f),
            "Detail": describe(f) + (f" (attempt {attempts})" if attempts > 1 else "")}


def _transmission_values(order: _TrailOrder, t: dict, detail: dict, previous: dict | None
                         ) -> tuple[dict[str, Any], dict | None]:
    """The row values of one transmission, and the fields last sent after it."""
    kind, ids = t["kind"], {"OrderId": t.get("order_id") or None}
    if kind == "place":
        sent = detail or order.fields           # journals before the place detail: the intent's fields
        return {**ids, "Quantity": sent.get("quantity"), "Price": _asked_price(sent),
                "Detail": f"{describe(sent)} sent as order {t.get('order_id')} (client {t.get('client_id')})"}, sent
    if kind == "modify":
        return {**ids, "Quantity": detail.get("quantity"), "Price": _asked_price(detail),
                "Detail": _changes(previous, detail)}, {**(previous or {}), **detail}
    if kind == "global_cancel":
        return {"Symbol": None, "Action": None, "Detail": "reqGlobalCancel: every open order of the account(s)"}, \
            previous
    return {**ids, "Detail": f"cancelOrder {t.get('order_id')} (client {t.get('client_id')})"}, previous


def _status_values(s: dict) -> dict[str, Any]:
    filled, avg = s.get("filled"), s.get("avg_fill_price")
    text = f"{s.get('status')} filled {_num(filled)} remaining {_num(s.get('remaining'))}"
    if filled and avg:
        text += f" avg {_num(avg)}"
    if s.get("message"):
        text += f": {s['message']}"
    return {"Status": s.get("status"), "Price": avg if filled and avg else None, "Detail": text,
            "PermId": s.get("perm_id") or None}


def _fill_events(order: _TrailOrder, fills: list[dict], statuses: list[dict], before: list[_TrailEvent]
                 ) -> list[_TrailEvent]:
    """A fill and its commission per execution; see the module docstring for where a fill sorts."""
    events: list[_TrailEvent] = []
    sent = [e.key for e in before if e.values["Event"] in ("intent", "place", "modify")]
    cumulative, floor = 0.0, _EARLIEST
    for seq, f in enumerate(fills):
        cumulative += float(f.get("shares") or 0)
        stamp, note = _ib_time(f.get("time"))
        floor = max(floor, _precedes(cumulative, stamp, statuses, sent))
        key = max(floor, stamp) if stamp is not None else floor
        shown = key if stamp is not None and key < stamp + _SECOND else stamp    # within IB's second
        ids = {"OrderId": f.get("order_id") or None, "PermId": f.get("perm_id") or None}
        side = f.get("side") or ""
        detail = f"{side} {_num(f.get('shares'))} @ {_num(f.get('price'))} execId {f.get('exec_id')}{note}"
        events.append(_TrailEvent(key, _RANK["fill"], seq, shown, order.values(
            "fill", Action=_SIDES.get(side, order.fields.get("action")), Quantity=f.get("shares"),
            Price=f.get("price"), Detail=detail, **ids)))
        if f.get("commission") is not None:
            events.append(_TrailEvent(key, _RANK["commission"], seq, shown,
                                 order.values("commission", Detail=_commission_text(f), **ids)))
        floor = key
    return events


def _precedes(cumulative: float, stamp: datetime | None, statuses: list[dict], sent: list[datetime]) -> datetime:
    """The latest event that must come before a fill bringing the order to ``cumulative`` filled: the
    intent, a place or modify (``sent``), or a status reporting less filled, each before IB reported
    this fill (or, with no such report, before the end of the fill's second)."""
    times = [(_journal_time(s["time"]), s.get("filled")) for s in statuses]
    reported = next((t for t, filled in times if filled is not None and filled >= cumulative - 1e-9), None)
    bound = reported or (stamp + _SECOND if stamp is not None else None)
    earlier = [t for t, filled in times if t is not None and (filled is None or filled < cumulative - 1e-9)]
    return max((t for t in sent + earlier if bound is None or t < bound), default=_EARLIEST)


def _commission_text(f: dict) -> str:
    text = f"{_money(f['commission'])} {f.get('commission_currency') or ''}".strip()
    if f.get("realized_pnl") is not None:
        text += f", realized P&L {_money(f['realized_pnl'])}"
    return text


# --- text ---------------------------------------------------------------------------------------------
def describe(fields: dict) -> str:
    """An order's fields in a trader's words: ``BUY 1 LMT 235 DAY``; with the stop, trail, bracket,
    OCA, outside-RTH and transmit parts it has (``SELL 5 STP LMT stop 230 limit 229.5 GTC``)."""
    f = fields
    parts = [str(f.get("action") or "?"), _num(f.get("quantity")), str(f.get("order_type") or "?")]
    limit, stop = f.get("limit_price"), f.get("stop_price")
    if f.get("order_type") in ("TRAIL", "TRAIL LIMIT"):
        trail = f.get("trail_amount")
        parts.append(f"trail {_num(trail)}" if trail is not None else f"trail {_num(f.get('trail_percent'))}%")
        if stop is not None:
            parts.append(f"stop {_num(stop)}")
    elif limit is not None and stop is not None:
        parts += [f"stop {_num(stop)}", f"limit {_num(limit)}"]
    elif limit is not None or stop is not None:
        parts.append(_num(limit if limit is not None else stop))
    if f.get("offset") is not None:
        parts.append(f"offset {_num(f['offset'])}")
    parts.append(str(f.get("tif") or "DAY"))
    if f.get("good_till"):
        parts.append(f"till {f['good_till']} UTC")
    if f.get("take_profit") is not None:
        parts.append(f"take profit {_num(f['take_profit'])}")
    if f.get("stop_loss") is not None:
        parts.append(f"stop loss {_num(f['stop_loss'])}")
    if f.get("oca_group"):
        parts.append(f"OCA {f['oca_group']}")
    if f.get("outside_rth"):
        parts.append("outside RTH")
    if f.get("transmit") is False:
        parts.append("not transmitted")
    return " ".join(parts)


def _changes(previous: dict | None, new: dict) -> str:
    """A modify's new values: ``LimitPrice 230 -> 236`` for each changed field (every modifiable value
    it set when what was sent before is unknown)."""
    out = []
    for name, column in COLUMN_OF.items():          # every field a modification may carry
        if name not in new:
            continue
        if previous is None:
            if new[name] is not None:
                out.append(f"{column} {_num(new[name])}")
        elif new[name] != previous.get(name):
            out.append(f"{column} {_num(previous.get(name))} -> {_num(new[name])}")
    return ", ".join(out) or "no field changed"


def _asked_price(f: dict) -> float | None:
    return f.get("limit_price") if f.get("limit_price") is not None else f.get("stop_price")


def _num(v: Any) -> str:
    """A number as a trader writes it: 235.1, 1000, 0.00005 (up to 10 significant digits)."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    try:
        return f"{float(v):.10g}"
    except (TypeError, ValueError):
        return str(v)


def _money(v: float) -> str:
    """At least two decimals, more when the amount has them: 1.00, 0.3712."""
    text = f"{float(v):.6f}".rstrip("0")
    decimals = len(text.partition(".")[2])
    return f"{float(v):.{max(2, decimals)}f}"


def _decode(text: Any) -> dict:
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# --- time ---------------------------------------------------------------------------------------------
def _journal_time(text: Any) -> datetime | None:
    """A time the journal wrote (ISO 8601, UTC)."""
    try:
        t = datetime.fromisoformat(str(text))
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _ib_time(text: Any) -> tuple[datetime | None, str]:
    """IB's execution time text as a UTC instant, and a note for Detail when it could not be read as
    written (a zone IB would not resolve is read as this machine's; an unreadable text gives None)."""
    try:
        parsed = read_time(str(text or ""))
        try:
            return parsed.instant(default_zone=None), ""
        except UnknownZoneError:
            return without_zone(parsed).instant(default_zone=None), f" (time {text!r}: zone read as local)"
    except IBTimeError:
        return None, f" (time {text!r} unreadable)"


def _instant(since: datetime | date, zone: tzinfo) -> datetime:
    """``since`` as a UTC instant: a date is its midnight in ``zone``, a naive datetime wall time there."""
    if not isinstance(since, datetime):
        since = datetime.combine(since, time())
    if since.tzinfo is None:
        since = since.replace(tzinfo=zone)
    return since.astimezone(UTC)


def _frame(events: list[_TrailEvent], zone: tzinfo) -> pd.DataFrame:
    rows = [{**e.values, "Time": e.time} for e in events]
    df = pd.DataFrame(rows, columns=list(AUDIT_COLUMNS))
    df["Time"] = pd.to_datetime(df["Time"], utc=True).dt.tz_convert(zone)
    for column in ("Quantity", "Price"):
        df[column] = pd.to_numeric(df[column], errors="coerce").astype(float)
    for column in ("OrderId", "PermId"):
        df[column] = pd.to_numeric(df[column], errors="coerce").astype("Int64")
    return df
