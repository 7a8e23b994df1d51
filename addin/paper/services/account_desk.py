"""Accounts at the paper gateway: positions, account summary, account updates (values, portfolio,
update time, download end), account updates multi, positions multi, P&L and P&L single.

Subscriptions stay live: a fill re-sends what changed, and a timer re-sends marked-to-market values
(P&L every second, as TWS does; account values and portfolio every ``account_interval`` seconds).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
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
                conn.send(messages.position(acct, contract, pos, avg_cost))
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
                conn.send(messages.position_multi(req.req_id, acct, req.model_code, contract, pos, avg_cost))
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
        self._send_updates(sub)
        self._add(sub)

    def _send_updates(self, sub: _Sub) -> None:
        broker, send, acct = self.broker, sub.conn.send, sub.account
        for key, value, currency in broker.account_values(acct):
            send(messages.account_value(key, value, currency, acct))
        for contract, pos, price, market_value, avg_cost, unrealized, realized in broker.portfolio(acct):
            send(messages.portfolio_value(contract, pos, price, market_value, avg_cost, unrealized, realized, acct))
        send(messages.account_update_time(self.now().strftime("%H:%M")))
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
        """P&L every second; account values and portfolio every ``account_interval`` seconds."""
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
                        self._send_updates(sub)
            except Exception:
                log.exception("paper gateway account refresh failed")

    def drop_connection(self, conn) -> None:
        for key in [k for k, s in self.subs.items() if s.conn is conn]:
            del self.subs[key]
