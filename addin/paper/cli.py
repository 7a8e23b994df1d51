"""``ibxl paper`` and ``python -m addin.paper``: serve the paper gateway until interrupted.

Only click is imported here; the gateway itself (numpy, pandas, the market model) loads when the
command runs, so ``ibxl --help`` and ``ibxl check`` never pay for it."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime

import click


def _parse_start(value: str | None) -> datetime | None:
    if not value:
        return None
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback only "
              "unless --allow-remote).")
@click.option("--port", default=4002, show_default=True, type=int, help="TCP port (IB Gateway's paper "
              "port); 0 picks a free one.")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the tick generator.")
@click.option("--speed", default=1.0, show_default=True, type=float, help="Replayed seconds per real "
              "second (0 freezes the market).")
@click.option("--accounts", default="DU1234567", show_default=True, help="Comma-separated paper "
              "account ids (DU...).")
@click.option("--start", default=None, help="Replay start time, ISO 8601 (default: now). Pins the market: "
              "the prices, and the futures listed (ES rolls with this date).")
@click.option("--synthetic", default=0, show_default=True, type=click.IntRange(0, 2000),
              help="Add SIM0001.. synthetic instruments for load tests.")
@click.option("--max-lines", default=100, show_default=True, type=int, help="Market data lines per client.")
@click.option("--firehose", is_flag=True, help="Benchmarks: replace the replayed quotes by synthetic ticks to "
              "every line, as fast as the sockets take them.")
@click.option("--around-the-clock", is_flag=True, help="Trade every replayed day around the clock, the start "
              "day included (the tests' and the demo's market). Default: the exchange calendar, real weekdays "
              "kept, no trading on weekends and holidays.")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --host (there is no "
              "authentication: anyone who can reach the port can trade the paper accounts).")
def paper(host, port, seed, speed, accounts, start, synthetic, max_lines, firehose, around_the_clock,
          allow_remote) -> None:
    """Serve the paper gateway until interrupted (Ctrl-C).

    A TWS API server that replays real market data and fills orders against it: point ibapi,
    ib_async or ibxl at the printed port as you would at TWS or IB Gateway.
    """
    from .gateway import check_bind
    from .server import GatewayConfig

    account_list = tuple(a.strip() for a in accounts.split(",") if a.strip())
    bad = [a for a in account_list if not a.startswith("DU")]
    if not account_list or bad:
        raise click.BadParameter(f"paper account ids start with 'DU'; got {bad or 'none'}",
                                 param_hint="--accounts")
    try:
        check_bind(host, allow_remote)
        start_dt = _parse_start(start)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    config = GatewayConfig(host=host, port=port, accounts=account_list, seed=seed, speed=speed,
                           start=start_dt, synthetic=synthetic, max_lines=max_lines, allow_remote=allow_remote,
                           firehose=firehose, hours="around-the-clock" if around_the_clock else "exchange")
    try:
        asyncio.run(_serve(config))
    except KeyboardInterrupt:
        pass
    click.echo("paper gateway stopped")


async def _serve(config) -> None:
    from .codec.wire import SERVER_VERSION
    from .server import PaperServer

    server = PaperServer(config)
    try:
        port = await server.start()
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from exc
    click.echo(f"ibxl paper gateway listening on {config.host}:{port} (TWS API server version "
               f"{SERVER_VERSION}; accounts {','.join(config.accounts)}; {len(server.market.instruments)} "
               f"instruments; speed {config.speed:g}x; {config.hours} hours)", )
    click.echo("Press Ctrl-C to stop.")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: KeyboardInterrupt instead
            pass
    try:
        await stop.wait()
    finally:
        await server.stop()
