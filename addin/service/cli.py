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
    others = [c for c in st["clients"] if c["name"] != "ibxl service status"]
    click.echo(f"clients: {len(others)}")
    for c in others:
        click.echo(f"  #{c['client']} {c['name']} (pid {c['pid']}, {'+'.join(c['capabilities'])}): {c['lines']} lines")
