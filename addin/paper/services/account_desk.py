"""Accounts at the paper gateway: positions, account summary, account updates (values, portfolio,
update time, download end), account updates multi, positions multi, P&L and P&L single.

Subscriptions stay live: a fill re-sends what changed, and a timer re-sends marked-to-market values
(P&L every second, as TWS does). reqAccountUpdates behaves as at TWS: one full download (every
value, every portfolio row, the update time, accountDownloadEnd), then only what changed: account
values checked every ``account_interval`` seconds, portfolio rows after a fill at once and otherwise
refreshed (the changed ones) every :data:`PORTFOLIO_REFRESH_SECONDS` of replay time, IB's "every
three minutes". accountDownloadEnd is never sent again until the client subscribes anew.

updatePortfolio carries the contract's primaryExchange (NASDAQ, ARCA), as IB's does. Positions carry
what a real gateway writes (:func:`reported_contract`): a stock's primary exchange as its exchange
(NASDAQ, not SMART), nothing for FX (the EUR.USD POSITION_DATA capture).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ...protocol import errors
from ..codec import messages, requests

if TYPE_CHECKING:  # pragma: no cover
    from ..market.broker import Broker
    from .connection import ClientConnection

log = logging.getLogger(__name__)


@dataclass
class _Sub:
    conn: ClientConnection
    req_id: int
    kind: str            # positions, summary, updates, updates_multi, positions_multi, pnl, pnl_single
    account: str = ""
    tags: frozenset = frozenset()
    con_id: int = 0
    model: str = ""
    values: dict = field(default_factory=dict)     # updates: (key, currency) -> value last sent
    rows: dict = field(default_factory=dict)       # updates: conId -> portfolio row last sent
    refreshed: float = 0.0                         # updates: replay epoch of the last portfolio refresh


#: IB refreshes the changed portfolio values of reqAccountUpdates about every three minutes.
PORTFOLIO_REFRESH_SECONDS = 180.0


def reported_contract(contract):
    """The contract as IB reports it in POSITION_DATA / POSITION_MULTI: a stock's exchange is its
    primary exchange (not SMART), FX has none (the real EUR.USD capture), others keep theirs."""
    out = copy.copy(contract)
    if contract.secType == "STK" and contract.primaryExchange:
        out.exchange = contract.primaryExchange
    elif contract.secType == "CASH":
        out.exchange = ""
    return out


class PaperAccountService:
    """Positions, account summary, account updates (single and multi) and P&L subscriptions.

    broker: positions, values and P&L; now(): the replay clock (the account update time);
    accounts: the gateway's account ids (the first is the default); account_interval: seconds
    between re-sent account values and portfolio."""

    def __init__(self, broker: "Broker", now: Callable[[], datetime], *, accounts: tuple[str, ...],
                 account_interval: float):
        self.broker = broker
        self.now = now
        self.accounts = tuple(accounts)
        self.account_interval = account_interval
        self.subs: dict[tuple[int, str, int], _Sub] = {}

    def _add(self, sub: _Sub) -> None:
        self.subs[(id(sub.conn), sub.kind, sub.req_id)] = sub

    def _remove(self, conn, kind: str, req_id: int) -> None:
        self.subs.pop((id(conn), kind, req_id), None)

    def _accounts(self, account: str) -> list[str]:
        accounts = list(self.accounts)
        if account in ("", "All", "ALL"):
            return accounts
        return [account] if account in accounts else []

    def _known(self, conn, req_id: int, account: str) -> bool:
        if account and account not in self.accounts and account not in ("All", "ALL"):
            conn.send_error(req_id, errors.VALIDATION_ERROR, f"Error validating request.-'bP' : cause - "
                                                             f"Invalid account code '{account}'")
            return False
        return True

    # --- positions --------------------------------------------------------------------------------
    def req_positions(self, conn, fields) -> None:
        self._send_positions(conn)
        self._add(_Sub(conn, -1, "positions"))

    def _send_positions(self, conn, account: str | None = None) -> None:
        for acct, contract, pos, avg_cost in self.broker.positions():
            if account is None or acct == account:
                conn.send(messages.position(acct, reported_contract(contract), pos, avg_cost))
        if account is None:
            conn.send(messages.position_end())

    def cancel_positions(self, conn, fields) -> None:
        self._remove(conn, "positions", -1)

    def req_positions_multi(self, conn, fields) -> None:
        req = requests.req_positions_multi(fields)
        if not self._known(conn, req.req_id, req.account):
            return
        for acct, contract, pos, avg_cost in self.broker.positions():
            if acct in self._accounts(req.account):
                conn.send(messages.position_multi(req.req_id, acct, req.model_code, reported_contract(contract), pos,
                                                    avg_cost))
        conn.send(messages.position_multi_end(req.req_id))
        self._add(_Sub(conn, req.req_id, "positions_multi", req.account, model=req.model_code))

    def cancel_positions_multi(self, conn, fields) -> None:
        req = requests.cancel_positions_multi(fields)
        self._remove(conn, "positions_multi", req.req_id)

    # --- account summary --------------------------------------------------------------------------
    def req_account_summary(self, conn, fields) -> None:
        req = requests.req_account_summary(fields)
        tags = frozenset(t.strip() for t in req.tags.split(",") if t.strip())
        sub = _Sub(conn, req.req_id, "summary", req.group, tags)
        self._send_summary(sub)
        self._add(sub)

    def _send_summary(self, sub: _Sub) -> None:
        for acct in self._accounts(""):
            for tag, value, currency in self.broker.account_summary(acct, set(sub.tags)):
                sub.conn.send(messages.account_summary(sub.req_id, acct, tag, value, currency))
        sub.conn.send(messages.account_summary_end(sub.req_id))

    def cancel_account_summary(self, conn, fields) -> None:
        req = requests.cancel_account_summary(fields)
        self._remove(conn, "summary", req.req_id)

    # --- account updates --------------------------------------------------------------------------
    def req_account_updates(self, conn, fields) -> None:
        req = requests.req_account_updates(fields)
        account = req.account or self.accounts[0]
        if not req.subscribe:
            self._remove(conn, "updates", 0)
            return
        if not self._known(conn, -1, account):
            return
        sub = _Sub(conn, 0, "updates", account)
        self._send_updates(sub, full=True)
        self._add(sub)

    def _send_updates(self, sub: _Sub, *, full: bool = False, portfolio: bool = True) -> None:
        """The full download (``full``), or only the account values and (with ``portfolio``) the
        portfolio rows that changed since they were last sent; the update time follows any change."""
        broker, send, acct = self.broker, sub.conn.send, sub.account
        changed = False
        for key, value, currency in broker.account_values(acct):
            if full or sub.values.get((key, currency)) != value:
                sub.values[(key, currency)] = value
                send(messages.account_value(key, value, currency, acct))
                changed = True
        if portfolio:
            sub.refreshed = self.now().timestamp()
            for row in broker.portfolio(acct):
                contract = row[0]
                if full or sub.rows.get(contract.conId) != row[1:]:
                    sub.rows[contract.conId] = row[1:]
                    send(messages.portfolio_value(*row, acct))
                    changed = True
        if full or changed:
            send(messages.account_update_time(self.now().strftime("%H:%M")))
        if full:
            send(messages.account_download_end(acct))

    def req_account_updates_multi(self, conn, fields) -> None:
        req = requests.req_account_updates_multi(fields)
        if not self._known(conn, req.req_id, req.account):
            return
        sub = _Sub(conn, req.req_id, "updates_multi", req.account, model=req.model_code)
        self._send_updates_multi(sub)
        self._add(sub)

    def _send_updates_multi(self, sub: _Sub) -> None:
        for acct in self._accounts(sub.account):
            for key, value, currency in self.broker.account_values(acct):
                sub.conn.send(messages.account_update_multi(sub.req_id, acct, sub.model, key, value, currency))
        sub.conn.send(messages.account_update_multi_end(sub.req_id))

    def cancel_account_updates_multi(self, conn, fields) -> None:
        req = requests.cancel_account_updates_multi(fields)
        self._remove(conn, "updates_multi", req.req_id)

    # --- P&L --------------------------------------------------------------------------------------
    def req_pnl(self, conn, fields) -> None:
        req = requests.req_pnl(fields)
        if not self._known(conn, req.req_id, req.account):
            return
        sub = _Sub(conn, req.req_id, "pnl", req.account, model=req.model_code)
        self._send_pnl(sub)
        self._add(sub)

    def req_pnl_single(self, conn, fields) -> None:
        req = requests.req_pnl_single(fields)
        if not self._known(conn, req.req_id, req.account):
            return
        sub = _Sub(conn, req.req_id, "pnl_single", req.account, con_id=req.con_id, model=req.model_code)
        self._send_pnl(sub)
        self._add(sub)

    def cancel_pnl(self, conn, fields) -> None:
        self._remove(conn, "pnl", requests.cancel_pnl(fields).req_id)

    def cancel_pnl_single(self, conn, fields) -> None:
        self._remove(conn, "pnl_single", requests.cancel_pnl_single(fields).req_id)

    def _send_pnl(self, sub: _Sub) -> None:
        broker = self.broker
        if sub.kind == "pnl":
            daily, unrealized, realized = broker.pnl(sub.account)
            sub.conn.send(messages.pnl(sub.req_id, daily, unrealized, realized))
        else:
            pos, daily, unrealized, realized, value = broker.pnl_single(sub.account, sub.con_id)
            sub.conn.send(messages.pnl_single(sub.req_id, pos, daily, unrealized, realized, value))

    # --- keeping subscriptions live ---------------------------------------------------------------
    def on_change(self, account: str) -> None:
        """A fill changed positions or cash: re-send every subscription that shows them."""
        for sub in list(self.subs.values()):
            if sub.kind == "positions":
                self._send_positions(sub.conn, account)
            elif sub.kind == "updates" and sub.account == account:
                self._send_updates(sub)
            elif sub.kind == "summary":
                self._send_summary(sub)
            elif sub.kind == "updates_multi" and account in self._accounts(sub.account):
                self._send_updates_multi(sub)
            elif sub.kind in ("pnl", "pnl_single") and account in self._accounts(sub.account):
                self._send_pnl(sub)

    async def run(self) -> None:
        """P&L every second; changed account values every ``account_interval`` seconds, changed
        portfolio rows when PORTFOLIO_REFRESH_SECONDS of replay time have passed since the last."""
        ticks = 0
        every = max(1, round(self.account_interval))
        while True:
            await asyncio.sleep(1.0)
            ticks += 1
            try:
                for sub in list(self.subs.values()):
                    if sub.kind in ("pnl", "pnl_single"):
                        self._send_pnl(sub)
                    elif sub.kind == "updates" and ticks % every == 0:
                        due = self.now().timestamp() - sub.refreshed >= PORTFOLIO_REFRESH_SECONDS
                        self._send_updates(sub, portfolio=due)
            except Exception:
                log.exception("paper gateway account refresh failed")

    def drop_connection(self, conn) -> None:
        for key in [k for k, s in self.subs.items() if s.conn is conn]:
            del self.subs[key]
