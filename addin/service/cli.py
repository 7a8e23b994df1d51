"""``ibxl service start|stop|status``: the user's background service."""

from __future__ import annotations

import click

from . import launcher, paths


@click.group()
def service() -> None:
    """The background service that owns the IB connection for every workbook and script."""


@service.command()
@click.option("--host", default=None, help="TWS / IB Gateway host [config file].")
@click.option("--port", default=None, type=int, help="API port [config file].")
@click.option("--client-id", default=None, type=int, help="API client id [config file].")
def start(host, port, client_id) -> None:
    """Start the service in the background (nothing happens when one is running)."""
    if launcher.running():
        click.echo("the ibxl service is already running")
        return
    args = []
    for flag, value in (("--host", host), ("--port", port), ("--client-id", client_id)):
        if value is not None:
            args += [flag, str(value)]
    try:
        pid = launcher.start_detached(args)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"ibxl service started (pid {pid}, socket {paths.socket_path()})")


@service.command()
def stop() -> None:
    """Stop the service: lines cancelled, journal closed."""
    from .client import TradingClient
    try:
        with TradingClient(name="ibxl service stop") as client:
            client.shutdown()
    except (FileNotFoundError, ConnectionRefusedError):
        click.echo("no ibxl service is running")
        return
    click.echo("ibxl service stopped")


@service.command()
def connect() -> None:
    """Connect the service to IB (ends a Disconnect)."""
    from .client import ServiceClient
    with ServiceClient(name="ibxl service connect") as client:
        st = client.connect()
    click.echo(f"IB: {st['state']} {st['host']}:{st['port']} client id {st['client_id']}")


@service.command()
def disconnect() -> None:
    """Disconnect the service from IB for every workbook and script, until `ibxl service connect`."""
    from .client import ServiceClient
    with ServiceClient(name="ibxl service disconnect") as client:
        client.disconnect()
    click.echo("disconnected; nothing reconnects until `ibxl service connect` (or Connect in a workbook)")


@service.command()
@click.option("-n", "--lines", default=40, show_default=True, help="How many of the last lines.")
def logs(lines) -> None:
    """The end of the service's log file."""
    path = paths.log_path()
    if not path.exists():
        click.echo(f"no log yet ({path})")
        return
    click.echo("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))


@service.command()
def status() -> None:
    """The connection, the clients and the lines in use. Exit code 1 when no service runs."""
    from .client import ServiceClient
    try:
        with ServiceClient(name="ibxl service status", timeout=10) as client:
            st = client.status()
    except (FileNotFoundError, ConnectionRefusedError):
        click.echo("no ibxl service is running")
        raise SystemExit(1) from None
    state = "disconnected by the user (ibxl service connect)" if st["user_disconnected"] else st["state"]
    click.echo(f"service pid {st['service_pid']}, up {st['uptime']:.0f} s")
    click.echo(f"IB: {state} {st['host']}:{st['port']} client id {st['client_id']} accounts {st['accounts'] or '-'}"
               + (f" (last error: {st['last_error']})" if st["last_error"] else ""))
    click.echo(f"lines in use: {st['lines']}")
    h = st["history"]
    click.echo(f"history pacing: {h['open']} open, {h['pending']} waiting, {h['sent']} sent, "
               f"longest wait {h['max_delay']:.1f} s")
    click.echo(f"open orders: {'-' if st['open_orders'] is None else st['open_orders']}")
    others = [c for c in st["clients"] if c["name"] != "ibxl service status"]
    click.echo(f"clients: {len(others)}")
    for c in others:
        click.echo(f"  #{c['client']} {c['name']} (pid {c['pid']}, {'+'.join(c['capabilities'])}): {c['lines']} lines")
