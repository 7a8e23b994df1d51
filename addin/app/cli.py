"""The ``ibxl`` command line: ``demo``, ``run``, ``check``, ``journal`` (the orders' audit trail), ``paper``
(the offline TWS API server)."""

from __future__ import annotations

import importlib
import logging

import click


class _LazyGroup(click.Group):
    """A group whose listed commands may live in modules imported only when that command runs:
    ``ibxl --help`` and ``ibxl check`` never load the paper gateway. Their one-line help is given
    here, so listing them imports nothing either."""

    lazy = {"paper": ("addin.paper.cli", "paper", "Serve the paper gateway until interrupted (Ctrl-C)."),
            "service": ("addin.service.cli", "service", "The background service owning the IB connection."),
            "excel": ("addin.app.excel_cli", "excel", "Excel on Windows: install or remove the RTD server.")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            module, attr, _ = self.lazy[name]
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if name in self.lazy and name not in self.commands:
                rows.append((name, self.lazy[name][2]))
                continue
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_LazyGroup)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """ibxl: Interactive Brokers in Excel."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")



@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Where TWS or IB Gateway runs.")
@click.option("--port", default=4002, show_default=True, type=int,
              help="API port: TWS 7497 paper / 7496 live, IB Gateway 4002 paper / 4001 live.")
@click.option("--client-id", default=1, show_default=True, type=int, help="The API client id to try.")
@click.option("--timeout", default=10.0, show_default=True, type=float, help="Seconds per step.")
@click.option("--instrument", default="AAPL", show_default=True,
              help="Instrument whose quote is checked (e.g. EUR/USD if you only have forex data).")
@click.option("--workbook", default=None, type=click.Path(dir_okay=False),
              help="Macro workbook whose xlwings DLL version is checked (default: the packaged ibxl.xlsm).")
def check(host, port, client_id, timeout, instrument, workbook) -> None:
    """Diagnose the connection to TWS or IB Gateway: run this first.

    Checks, in order: is the installed xlwings the version the workbook's VBA loads, is anything
    listening, does it speak the TWS API, is the client id free, which accounts (paper or live), and
    which market data type quotes actually arrive in; for each
    problem it says what to change. Exit code 0 when all is well, 1 when something needs fixing.
    """
    from .doctor import run_check
    try:
        code = run_check(host, port, client_id, timeout, instrument=instrument, workbook=workbook,
                         echo=click.echo)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    raise SystemExit(code)


class _HistoryProgress:
    """A progress bar for a history pull that takes several IB requests (silent for one)."""

    def __init__(self):
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if total <= 1:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label="history requests", show_pos=True)
            self.bar.__enter__()
        self.bar.update(done - self.bar.pos)
        if done >= total:
            self.bar.__exit__(None, None, None)


def _print_summary(summary) -> None:
    """The readable end of a run: quotes, history, orders and portfolio in a few lines each."""
    from .jobs import format_summary
    click.echo(format_summary(summary))


@main.command()
@click.option("--out", type=click.Path(dir_okay=False), default="ibxl-demo.xlsx", show_default=True,
              help="Where to write the demo workbook (a copy of workbooks/ibxl.xlsx).")
@click.option("--seconds", default=5.0, show_default=True, type=click.FloatRange(0, 3600),
              help="How long to stream the Watchlist.")
def demo(out, seconds) -> None:
    """Run the whole loop on the paper gateway: no TWS, no Excel needed.

    Starts the paper gateway (real replayed prices) on a free loopback port, copies the template
    workbook to OUT, streams the Watchlist, pulls GOOG history, places the sample orders (some are
    refused by the risk checks on purpose, with the reason in the row), refreshes the portfolio, saves
    and prints a summary. Open OUT in Excel (or LibreOffice) afterwards.
    """
    from .jobs import run_demo
    summary = run_demo(out, seconds=seconds, echo=click.echo)
    _print_summary(summary)
    raise SystemExit(0 if summary.ok else 1)


@main.command()
@click.argument("workbook", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", default=None, help="TWS / IB Gateway host [config file, else 127.0.0.1].")
@click.option("--port", default=None, type=int, help="API port: TWS 7497 paper / 7496 live, IB Gateway "
              "4002 paper / 4001 live [config file, else 4002].")
@click.option("--client-id", default=None, type=int, help="API client id [config file, else 1].")
@click.option("--stream", "stream_seconds", default=0.0, show_default=True, type=click.FloatRange(0, 86400),
              help="Stream the Watchlist Table for this many seconds.")
@click.option("--history", is_flag=True, help="Pull the bars the History sheet asks for.")
@click.option("--orders", is_flag=True, help="Place the pending rows of the Orders Table (after the risk "
              "checks) and wait for IB's answers.")
@click.option("--cancel", default=None, metavar="all|REF,...", help="Cancel every open order (all) or these Refs.")
@click.option("--portfolio", is_flag=True, help="Refresh Positions, Account, P&L and Executions.")
@click.option("--analysis", is_flag=True, help="Write the portfolio analysis (exposure, concentration, P&L, "
              "risk, what-if of the pending Orders rows) into the Analysis sheet.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Save to this new file instead of overwriting WORKBOOK.")
def run(workbook, host, port, client_id, stream_seconds, history, orders, cancel, portfolio, analysis,
        out) -> None:
    """Do the workbook's jobs headless against TWS, IB Gateway or the paper gateway, then save it.

    Uses the Tables the workbook has (Watchlist, Orders, Positions, Account, Executions, Bars; Audit: the
    orders' trail, rewritten after --orders and --cancel) and leaves every other sheet, formula and
    format as it was. Risk limits come from your config file
    (~/.ibxl/config.toml or $IBXL_CONFIG), tightened by the workbook's Config sheet.

    When your ibxl service runs (and --host, --port and --client-id are not given) the jobs go through
    it: its one IB connection, line budget, pacing and order desk; else ibxl run connects on its own.
    """
    from ..config import ConfigError, load_settings
    from ..excel.book import BookError
    from ..ib.session import IBError
    from .jobs import run_workbook
    if not any((stream_seconds, history, orders, cancel, portfolio, analysis)):
        raise click.UsageError("nothing to do: pass at least one of --stream, --history, --orders, --cancel, "
                               "--portfolio, --analysis")
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    conn = settings.connection
    runtime = None
    if host is None and port is None and client_id is None:
        runtime = _service_runtime(settings)
    try:
        summary = run_workbook(workbook, out=out, host=host or conn.host, port=port or conn.port,
                               client_id=client_id if client_id is not None else conn.client_id,
                               stream=stream_seconds, history=history, orders=orders, cancel=cancel,
                               portfolio=portfolio, analysis=analysis, settings=settings, echo=click.echo,
                               progress=_HistoryProgress(), runtime=runtime)
    except (BookError, IBError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    _print_summary(summary)
    raise SystemExit(0 if summary.ok else 1)


def _service_runtime(settings):
    """A RemoteRuntime of the user's ibxl service when one runs (and the config allows it), else None:
    ``ibxl run`` then connects on its own (it never starts a service)."""
    from ..service.launcher import running
    from .runtime import use_service
    if not use_service(settings) or not running():
        return None
    from ..service.remote import RemoteRuntime
    return RemoteRuntime(name="ibxl run")


class _DateOrTime(click.ParamType):
    """YYYY-MM-DD (a date) or an ISO date and time (2026-12-03T14:30, with or without an offset)."""

    name = "DATE"

    def convert(self, value, param, ctx):
        from datetime import date, datetime
        if isinstance(value, date):
            return value
        text = str(value).strip()
        try:
            return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"expected YYYY-MM-DD or an ISO date and time such as 2026-12-03T14:30, got {value!r}",
                      param, ctx)


def _zone(ctx, param, value):
    from ..orders.audit import resolve_zone
    from ..protocol.times import IBTimeError
    try:
        return value, resolve_zone(value)
    except IBTimeError as exc:
        raise click.BadParameter(f"{exc}: give an IANA name such as Asia/Tokyo or America/New_York, or UTC",
                                 ctx, param) from None


@main.command()
@click.option("--ref", default=None, help="Only this Ref and its bracket children (REF.TP, REF.SL); any case.")
@click.option("--since", type=_DateOrTime(), default=None,
              help="Only events at or after this date (YYYY-MM-DD: its midnight) or ISO date and time, in --tz.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (one line per event) instead of a table.")
@click.option("--journal", "journal_file", type=click.Path(dir_okay=False), default=None,
              help="The order journal [$IBXL_JOURNAL, else journal.sqlite3 beside the config file].")
@click.option("--tz", "zone", default=None, callback=_zone, metavar="ZONE",
              help="Show times in this zone (Asia/Tokyo, US/Eastern, UTC) [this machine's].")
def journal(ref, since, as_csv, journal_file, zone) -> None:
    """Print the audit trail of every order from the order journal, newest first.

    One line per event: the intent, each placeOrder, modify and cancel sent, every status IB reported,
    each fill and its commission. Exit code 1 when the journal is missing or unreadable or --ref names
    a Ref it does not hold.
    """
    from pathlib import Path

    from ..config import journal_path
    from ..orders.audit import audit_frame
    from ..orders.journal import Journal, JournalError
    name, tz = zone
    path = Path(journal_file) if journal_file else journal_path()
    if not path.is_file():        # never create one: a missing journal is a wrong path or no orders yet
        raise click.ClickException(f"no order journal at {path}: no order was placed with it (pass --journal "
                                   f"PATH or set $IBXL_JOURNAL to read another)")
    try:
        with Journal(path) as opened:
            df = audit_frame(opened, ref=ref, since=since, tz=tz)
    except KeyError:
        raise click.ClickException(f"Ref {ref.strip()!r} is not in the order journal {path}") from None
    except JournalError as exc:
        raise click.ClickException(str(exc)) from None
    if as_csv:
        click.echo(df.to_csv(index=False), nl=False)
        return
    from datetime import datetime
    click.echo(_audit_text(df, path, name or f"this machine's zone ({datetime.now(tz).tzname()})"))


def _audit_text(df, path, zone: str) -> str:
    """The audit frame as a readable table: times to the second, blanks for what an event lacks."""
    head = f"order journal {path}: {len(df)} events, newest first, times in {zone}"
    if df.empty:
        return head
    shown = df.astype(object).where(df.notna(), "")
    shown["Time"] = [t.strftime("%Y-%m-%d %H:%M:%S") if t != "" else "?" for t in shown["Time"]]
    return head + "\n" + shown.to_string(index=False, max_colwidth=80)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True}, add_help_option=False)
@click.pass_context
def bench(ctx) -> None:
    """Run the benchmarks (python -m benchmarks): figures against peers measured in the same run.

    Options: --quick, --only NAME, --json PATH, --memory-seconds S; see `ibxl bench --help`.
    """
    from benchmarks.__main__ import main as bench_main
    bench_main.main(args=ctx.args, prog_name="ibxl bench")


if __name__ == "__main__":
    main()
