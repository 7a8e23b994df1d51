"""``ibxl check``: the connection doctor a new user runs first.

:func:`diagnose` walks the path from this machine to TWS / IB Gateway (or the paper gateway) one
step at a time and says, for each, what it found and, when something is wrong, what to change:

1. ``listening``    does anything accept a TCP connection at host:port?
2. ``api``          does it answer the TWS API handshake (``API\\0`` + version range) with a server
                    version? (Not: an HTTP server, another program, a TWS that drops the socket.)
3. ``client id``    does a full API session start with this client id (IB's error 326 when another
                    program holds it; a free id is looked for and suggested)?
4. ``accounts``     which accounts the login manages, paper ("D...") or live ("U...").
5. ``market data``  a quote of ``instrument``: which market data type actually arrives (live 1,
                    frozen 2, delayed 3, delayed-frozen 4) or IB's error.

A step whose prerequisite failed is ``skipped``. Only stdlib sockets (steps 1-2) and the product's
own :class:`addin.ib.session.Session` (steps 3-5) are used; nothing is sent that changes an account.
:func:`render` writes the diagnosis as text; :func:`run_check` is what the ``ibxl check`` command
calls (exit code 0 when every step is ok, 1 otherwise). It also runs :func:`check_xlwings` first: the
installed xlwings must be the version whose DLL the ibxl ``.xlsm``'s VBA declares.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ibapi.server_versions import MAX_CLIENT_VER, MIN_CLIENT_VER

from ..ib.session import IBError, Request, Session
from ..protocol import errors
from ..protocol.framing import frame_size, handshake, split_fields
from ..protocol.ticks import DATA_TYPE_OF_PRICE_TICK, DELAYED, DELAYED_TYPES, FROZEN, LIVE, MARKET_DATA_TYPES

__all__ = ["Step", "Diagnosis", "diagnose", "render", "run_check", "check_xlwings", "template_xlsm", "OK",
           "FAILED", "SKIPPED", "TWS_API_SETTINGS", "KNOWN_PORTS"]

OK, FAILED, SKIPPED = "ok", "failed", "skipped"

#: IB's default ports (DESIGN.md "Ports and accounts").
KNOWN_PORTS = {7497: "TWS paper", 7496: "TWS live", 4002: "IB Gateway paper", 4001: "IB Gateway live"}

#: Where the switches are, in TWS's and IB Gateway's own words.
TWS_API_SETTINGS = ("TWS: File > Global Configuration > API > Settings (IB Gateway: Configure > Settings > "
                    "API > Settings): tick 'Enable ActiveX and Socket Clients'; set 'Socket port' to 7497 "
                    "(paper) or 7496 (live), IB Gateway 4002 (paper) or 4001 (live); add 127.0.0.1 to "
                    "'Trusted IPs'; then press Apply/OK")

_MAX_ID_PROBES = 8


@dataclass
class Step:
    """One check: ``name``; ``status`` ok / failed / skipped; ``finding``: what was seen, in words;
    ``fix``: what to change (only on failure; may be empty when nothing the user can change)."""

    name: str
    status: str
    finding: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass
class Diagnosis:
    """The steps of one :func:`diagnose` run, in order, plus what was found along the way:
    ``server_version`` (TWS API server version, None before step 2 passed), ``accounts`` (ids),
    ``paper`` (True/False/None), ``data_type`` ("live", "frozen", "delayed", "delayed-frozen" or
    None), ``elapsed`` seconds."""

    host: str
    port: int
    client_id: int
    steps: list[Step] = field(default_factory=list)
    server_version: int | None = None
    accounts: tuple[str, ...] = ()
    paper: bool | None = None
    data_type: str | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no step failed (and at least one ran)."""
        return bool(self.steps) and all(s.status != FAILED for s in self.steps)

    @property
    def exit_code(self) -> int:
        """0 when every step is ok, 1 when anything is wrong (what ``ibxl check`` exits with)."""
        return 0 if self.ok else 1

    def step(self, name: str) -> Step:
        """The step called ``name``; KeyError when there is none."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def add(self, name: str, status: str, finding: str, fix: str = "") -> Step:
        s = Step(name, status, finding, fix)
        self.steps.append(s)
        return s

    def skip_rest(self, names: list[str], reason: str) -> None:
        for name in names:
            self.add(name, SKIPPED, reason)


STEP_NAMES = ["listening", "api", "client id", "accounts", "market data"]


def diagnose(host: str = "127.0.0.1", port: int = 4002, client_id: int = 1, timeout: float = 10.0, *,
             instrument: str = "AAPL", data_type: int = 1) -> Diagnosis:
    """Check the way from here to TWS / IB Gateway at ``host:port`` as API client ``client_id``.

    timeout: seconds allowed to each step (TCP connect, handshake answer, session start, first
    quote). instrument: cell text of the instrument whose quote is asked for (default "AAPL").
    data_type: the market data type asked for first (1 live, 3 delayed, ...); when IB answers 1
    with error 354 (not subscribed) the doctor asks again for delayed data (3) to tell the user
    what they would get. Never raises for anything the far side does: every outcome is a step;
    raises ValueError for a bad argument (port outside 1..65535, negative client id).
    """
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port: {port!r} is not a TCP port (1..65535)")
    if int(client_id) < 0:
        raise ValueError(f"client_id: {client_id!r} must be 0 or more")
    if data_type not in MARKET_DATA_TYPES:
        raise ValueError(f"data_type: {data_type!r} must be one of {sorted(MARKET_DATA_TYPES)}")
    t0 = time.monotonic()
    dx = Diagnosis(host, int(port), int(client_id))
    try:
        _run_steps(dx, timeout, instrument, data_type)
    finally:
        dx.elapsed = time.monotonic() - t0
    return dx


def _run_steps(dx: Diagnosis, timeout: float, instrument: str, data_type: int) -> None:
    if not _check_listening(dx, timeout):
        dx.skip_rest(STEP_NAMES[1:], "skipped: nothing to talk to")
        return
    if not _check_api(dx, timeout):
        dx.skip_rest(STEP_NAMES[2:], "skipped: the port does not speak the TWS API")
        return
    session = Session(dx.host, dx.port, dx.client_id, reconnect=False, request_timeout=timeout)
    if not _check_client_id(dx, session, timeout):
        dx.skip_rest(STEP_NAMES[3:], "skipped: no API session")
        return
    try:
        _check_accounts(dx, session)
        _check_market_data(dx, session, timeout, instrument, data_type)
    finally:
        session.disconnect()


# --- 1. listening -----------------------------------------------------------------------------------
def _port_words(port: int) -> str:
    name = KNOWN_PORTS.get(port)
    return f"port {port} ({name}'s default)" if name else f"port {port}"


def _check_listening(dx: Diagnosis, timeout: float) -> bool:
    where = f"{dx.host}:{dx.port}"
    try:
        with socket.create_connection((dx.host, dx.port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        others = ", ".join(f"{p} ({n})" for p, n in KNOWN_PORTS.items() if p != dx.port)
        dx.add("listening", FAILED,
               f"nothing listens at {where}: the connection was refused",
               f"start TWS or IB Gateway and log in, then check {TWS_API_SETTINGS}. The socket port "
               f"there must be {dx.port}, or pass --port with the one it shows (IB's defaults: {others}).")
        return False
    except TimeoutError:
        dx.add("listening", FAILED,
               f"no answer from {where} within {timeout:g} s (the connection attempt was neither "
               f"accepted nor refused)",
               "check --host: a firewall or a wrong address swallows the connection; TWS on another "
               "machine must also untick 'Allow connections from localhost only' and list this "
               f"machine in 'Trusted IPs' ({TWS_API_SETTINGS})")
        return False
    except socket.gaierror as exc:
        dx.add("listening", FAILED, f"the host name {dx.host!r} cannot be resolved: {exc.strerror or exc}",
               "pass --host with the address of the machine running TWS (127.0.0.1 for this one)")
        return False
    except OSError as exc:
        dx.add("listening", FAILED, f"cannot connect to {where}: {exc.strerror or exc}",
               "check --host and --port, and that this machine can reach the one running TWS")
        return False
    dx.add("listening", OK, f"something accepts connections at {where} ({_port_words(dx.port)})")
    return True


# --- 2. the API handshake ---------------------------------------------------------------------------
def _read_handshake(sock: socket.socket, deadline: float) -> tuple[bytes, str]:
    """Bytes received until one length-prefixed message is whole, the peer closes ("closed") or the
    deadline passes ("timeout")."""
    data = b""
    while True:
        size = frame_size(data)
        if size is not None and (size > 1 << 20 or len(data) >= 4 + size):
            return data, "whole"
        left = deadline - time.monotonic()
        if left <= 0:
            return data, "timeout"
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return data, "timeout"
        except OSError:
            return data, "closed"
        if not chunk:
            return data, "closed"
        data += chunk


def _check_api(dx: Diagnosis, timeout: float) -> bool:
    where = f"{dx.host}:{dx.port}"
    hello = handshake(MIN_CLIENT_VER, MAX_CLIENT_VER)
    try:
        with socket.create_connection((dx.host, dx.port), timeout=timeout) as sock:
            sock.sendall(hello)
            data, how = _read_handshake(sock, time.monotonic() + timeout)
    except OSError as exc:
        dx.add("api", FAILED, f"the connection to {where} failed during the handshake: {exc.strerror or exc}",
               f"check {TWS_API_SETTINGS}")
        return False
    if data.lstrip().upper().startswith(b"HTTP/") or data.lstrip().startswith(b"<"):
        first = data.split(b"\r\n", 1)[0].decode("latin-1", "replace")[:60]
        dx.add("api", FAILED, f"a web server answers at {where} ({first!r}), not TWS or IB Gateway",
               f"pass --port with TWS's API socket port, not a web port; {TWS_API_SETTINGS}")
        return False
    if how == "timeout" and not data:
        dx.add("api", FAILED,
               f"something at {where} accepts connections but sent nothing back to the TWS API handshake "
               f"within {timeout:g} s",
               "if this is TWS, it may be showing a dialog asking to accept the incoming API "
               f"connection: accept it, and add 127.0.0.1 to 'Trusted IPs' so it stops asking. "
               f"Otherwise another program holds {_port_words(dx.port)}: pass --port with TWS's API "
               f"port. {TWS_API_SETTINGS}")
        return False
    if how == "closed" and not data:
        dx.add("api", FAILED,
               f"{where} accepted the connection and closed it without answering the TWS API handshake",
               "TWS closes connections from addresses that are not trusted, and IB Gateway closes them "
               "while it is not logged in: log in, and add 127.0.0.1 to 'Trusted IPs'; "
               f"{TWS_API_SETTINGS}")
        return False
    fields = split_fields(data[4:]) if how == "whole" else []
    version = fields[0].decode("ascii", "replace") if fields else ""
    if not version.isdigit():
        shown = data[:40]
        dx.add("api", FAILED, f"{where} answered the handshake with bytes that are not the TWS API "
                              f"({shown!r})",
               f"another program holds {_port_words(dx.port)}: pass --port with TWS's API socket port; "
               f"{TWS_API_SETTINGS}")
        return False
    dx.server_version = int(version)
    if dx.server_version < MIN_CLIENT_VER:
        dx.add("api", FAILED, f"TWS API server version {dx.server_version} is older than this client "
                              f"supports ({MIN_CLIENT_VER}..{MAX_CLIENT_VER})",
               "update TWS or IB Gateway to a current release")
        return False
    conn_time = fields[1].decode("ascii", "replace") if len(fields) > 1 else ""
    dx.add("api", OK, f"TWS API server version {dx.server_version}"
                      + (f", its clock reads {conn_time}" if conn_time else ""))
    return True


# --- 3. client id -----------------------------------------------------------------------------------
def _free_client_id(dx: Diagnosis, timeout: float) -> int | None:
    """A client id next to the wanted one that the far side accepts now (tried by connecting)."""
    for candidate in range(dx.client_id + 1, dx.client_id + 1 + _MAX_ID_PROBES):
        probe = Session(dx.host, dx.port, candidate, reconnect=False)
        try:
            probe.connect(timeout=min(timeout, 5.0))
        except IBError as exc:
            if exc.code == errors.CLIENT_ID_IN_USE:
                continue
            return None
        finally:
            probe.disconnect()
        return candidate
    return None


def _check_client_id(dx: Diagnosis, session: Session, timeout: float) -> bool:
    try:
        session.connect(timeout=timeout)
    except IBError as exc:
        if exc.code == errors.CLIENT_ID_IN_USE:
            free = _free_client_id(dx, timeout)
            hint = (f"pass --client-id {free} (free right now)" if free is not None
                    else "pass --client-id with a number no other program uses")
            dx.add("client id", FAILED,
                   f"client id {dx.client_id} is in use by another program (IB error 326)",
                   f"{hint}; every program connected to the same TWS needs its own client id")
            return False
        dx.add("client id", FAILED,
               f"the API session as client id {dx.client_id} did not start: {exc.text}",
               "TWS may be showing a dialog asking to accept the incoming API connection (accept it, "
               "and add 127.0.0.1 to 'Trusted IPs'), or IB Gateway is not logged in yet")
        return False
    dx.add("client id", OK, f"API session started as client id {dx.client_id}")
    return True


# --- 4. accounts ------------------------------------------------------------------------------------
def _check_accounts(dx: Diagnosis, session: Session) -> None:
    st = session.status
    dx.accounts, dx.paper = st.accounts, st.paper
    if not st.accounts:
        dx.add("accounts", FAILED, "the login manages no account (empty managedAccounts)",
               "log in to TWS or IB Gateway with a user that has a trading account")
        return
    ids = ", ".join(st.accounts)
    port_kind = KNOWN_PORTS.get(dx.port, "")
    if st.paper:
        note = " (on a live port: is this the TWS you meant?)" if port_kind.endswith("live") else ""
        dx.add("accounts", OK, f"paper account{'s' if len(st.accounts) > 1 else ''} {ids}{note}")
    else:
        note = " (on a paper port)" if port_kind.endswith("paper") else ""
        dx.add("accounts", OK, f"LIVE account{'s' if len(st.accounts) > 1 else ''} {ids}{note}: orders "
                               f"would be real; ibxl refuses them unless your own config says "
                               f"allow_live = true")


# --- 5. market data ---------------------------------------------------------------------------------
class _QuoteProbe:
    """One streaming reqMktData: the first price tick, the data type IB says it sends, IB's errors."""

    def __init__(self, session: Session, contract, data_type: int, timeout: float):
        self.session = session
        self.data_type_asked = data_type
        self.announced: int | None = None        # marketDataType callback
        self.implied: int | None = None          # from the first price tick's type
        self.price: tuple[int, float] | None = None
        self.notices: list[tuple[int, str]] = []
        self.done = threading.Event()

        def on_event(request, name, args):
            if name == "marketDataType":
                self.announced = int(args[1])
            elif name == "tickPrice" and args[2] not in (-1, 0) and args[1] in DATA_TYPE_OF_PRICE_TICK:
                self.price = (int(args[1]), float(args[2]))
                self.implied = DATA_TYPE_OF_PRICE_TICK[int(args[1])]
                request.finish(True)
                self.done.set()
            elif name == "notice":
                self.notices.append((int(args[1]), str(args[2])))
            return False

        def start(client, rid):
            client.reqMarketDataType(data_type)
            client.reqMktData(rid, contract, "", False, False, [])

        self.request = Request(f"market data check {contract.symbol}", start, on_event=on_event,
                               cancel=lambda client, rid: client.cancelMktData(rid), subscription=True,
                               timeout=timeout)

    def run(self, timeout: float) -> IBError | None:
        """The error that ended the line (None: a price arrived, or the timeout passed)."""
        self.session.submit(self.request)
        try:
            self.request.result(timeout + 1.0)
        except IBError as exc:
            if exc.code != errors.NO_ANSWER:     # no price within the timeout
                return exc
        finally:
            if self.request.active:       # a line IB already failed has nothing to cancel
                self.session.cancel(self.request)
        return None

    @property
    def data_type(self) -> int | None:
        return self.announced if self.announced is not None else self.implied


def _check_market_data(dx: Diagnosis, session: Session, timeout: float, instrument: str,
                       data_type: int) -> None:
    from ..ib.contracts import ContractBook, InstrumentError

    try:
        contract = ContractBook(session).contract(instrument)
    except (InstrumentError, IBError, ValueError) as exc:
        dx.add("market data", FAILED, f"could not look up {instrument!r} to ask for a quote: {exc}",
               "pass an instrument your account can see (cell text such as AAPL or EUR/USD)")
        return
    probe = _QuoteProbe(session, contract, data_type, timeout)
    err = probe.run(timeout)
    if err is not None and err.code == errors.NOT_SUBSCRIBED and data_type == LIVE:
        delayed = _QuoteProbe(session, contract, DELAYED, timeout)
        derr = delayed.run(timeout)
        if derr is None and delayed.price is not None:
            probe = delayed
            err = None
        else:
            dx.add("market data", FAILED, f"{instrument}: no live market data subscription (IB {err.code}: "
                                          f"{err.text}), and no delayed data either"
                                          + (f" (IB {derr.code}: {derr.text})" if derr else ""),
                   _SUBSCRIBE_FIX)
            return
    if err is not None:
        if err.code == errors.COMPETING_SESSION:
            fix = ("another login with the same user (TWS elsewhere, the mobile app or Client Portal) "
                   "holds the market data: log out there, or make this the session that receives it")
        elif err.code == errors.NOT_SUBSCRIBED:
            fix = _SUBSCRIBE_FIX
        else:
            fix = "see IB's message above; try another --instrument to tell an instrument problem from an account one"
        dx.add("market data", FAILED, f"{instrument}: IB {err.code}: {err.text}", fix)
        return
    if probe.price is None:
        dx.add("market data", FAILED, f"{instrument}: no price arrived within {timeout:g} s",
               "the market may be closed with no frozen data, or the data farm is down (see TWS's data "
               "connection lights); try again with a longer --timeout or during trading hours")
        return
    kind = probe.data_type or LIVE
    dx.data_type = MARKET_DATA_TYPES.get(kind, str(kind))
    tick, price = probe.price
    seen = f"{instrument}: quotes arrive as {dx.data_type} (type {kind}); first price {price:g}"
    if kind in DELAYED_TYPES:
        dx.add("market data", FAILED, seen + " -- 15-20 minutes late",
               f"quotes arrive as delayed (type {kind}): there is no live market data subscription for "
               f"this instrument's exchange. " + _SUBSCRIBE_FIX)
    elif kind == FROZEN:
        dx.add("market data", OK, seen + " (the market is closed: the last values, no live updates)")
    else:
        dx.add("market data", OK, seen)


_SUBSCRIBE_FIX = ("Subscribe in IBKR Client Portal: Settings > Market Data Subscriptions (e.g. the 'US "
                  "Securities Snapshot and Futures Value Bundle' for US stocks); a paper account gets its data "
                  "from the live user: Settings > Paper Trading Account > share real-time market data. "
                  "Without a subscription ibxl can show delayed data (15-20 minutes late).")


# --- xlwings against the workbook's VBA -----------------------------------------------------------------
def template_xlsm() -> Path:
    """The ibxl.xlsm that ships with the package (``workbooks/ibxl.xlsm``)."""
    import workbooks

    return Path(workbooks.__file__).resolve().parent / "ibxl.xlsm"


def check_xlwings(workbook: str | Path | None = None, installed: str | None = None) -> Step:
    """Step ``xlwings``: is the installed xlwings (``installed``, default ``xlwings.__version__``) the
    version whose DLL ``workbook``'s VBA loads (default: the packaged ibxl.xlsm)? The VBA is read with
    oletools. Failed, with the ``pip install xlwings==X`` that fixes it, when they differ or xlwings is
    missing; skipped when the workbook or oletools is not there."""
    path = Path(workbook) if workbook is not None else template_xlsm()
    if installed is None:
        try:
            import xlwings
        except ImportError:
            installed = None
        else:
            installed = xlwings.__version__
    try:
        from ..excel.vba import XlwingsDllNotDeclared, declared_xlwings_version
        declared = declared_xlwings_version(path)
    except ImportError:
        return Step("xlwings", SKIPPED, "cannot read VBA: oletools is not installed (pip install oletools)")
    except FileNotFoundError:
        return Step("xlwings", SKIPPED, f"no workbook at {path}")
    except XlwingsDllNotDeclared as exc:
        return Step("xlwings", SKIPPED, str(exc))
    dll = f"xlwings64-{declared}.dll"
    if installed is None:
        return Step("xlwings", FAILED, f"xlwings is not installed; {path.name} needs {dll}",
                    f"pip install xlwings=={declared}")
    if installed != declared:
        return Step("xlwings", FAILED,
                    f"xlwings {installed} is installed but {path.name}'s VBA loads {dll}: every button and "
                    f"worksheet function would fail with 'Could not load {dll}'",
                    f"pip install xlwings=={declared} (in the Python environment the workbook's "
                    f"Interpreter_Win / Interpreter_Mac points to)")
    return Step("xlwings", OK, f"xlwings {installed} matches {path.name}'s VBA ({dll})")


# --- output -------------------------------------------------------------------------------------------
_MARK = {OK: " ok ", FAILED: "FAIL", SKIPPED: "skip"}


def render(dx: Diagnosis) -> str:
    """The diagnosis as text for a terminal: one line per step ("[ ok ] name  finding"), the fix
    indented under a failed step, and a last line with the verdict."""
    width = max(len(s.name) for s in dx.steps) if dx.steps else 10
    lines = [f"ibxl check: {dx.host}:{dx.port} as client id {dx.client_id}"]
    for s in dx.steps:
        lines.append(f"  [{_MARK.get(s.status, s.status)}] {s.name:<{width}}  {s.finding}")
        if s.status == FAILED and s.fix:
            lines.append(f"         {'':<{width}}  fix: {s.fix}")
    failed = [s.name for s in dx.steps if s.status == FAILED]
    if failed:
        lines.append(f"{len(failed)} problem{'s' if len(failed) > 1 else ''} ({', '.join(failed)}); "
                     f"checked in {dx.elapsed:.1f} s")
    else:
        lines.append(f"all good: ibxl can use {dx.host}:{dx.port} as client id {dx.client_id}; "
                     f"checked in {dx.elapsed:.1f} s")
    return "\n".join(lines)


def run_check(host: str = "127.0.0.1", port: int = 4002, client_id: int = 1, timeout: float = 10.0, *,
              instrument: str = "AAPL", workbook: str | Path | None = None,
              echo: Callable[[str], None] = print) -> int:
    """What ``ibxl check`` does: :func:`check_xlwings` against ``workbook`` (default: the packaged
    ibxl.xlsm), diagnose, ``echo`` the rendered text, return the exit code (0 all ok, 1 a problem)."""
    xlwings_step = check_xlwings(workbook)
    dx = diagnose(host, port, client_id, timeout, instrument=instrument)
    dx.steps.insert(0, xlwings_step)
    echo(render(dx))
    return dx.exit_code
