"""``python -m benchmarks [--quick] [--only NAME ...] [--json PATH] [--memory-seconds S]``: run the
benchmarks against the paper gateway, print the table and write it as JSON.

Default: every benchmark at full size, well under 15 minutes on a 2-core machine (the 10-minute
memory run is last and runs alone). ``--quick``: the smallest configuration of each (~1 minute).
"""

from __future__ import annotations

import importlib
import logging
import time
import traceback

import click

from .report import not_measured, table, write_json

BENCHES = ("ingest", "tick_to_cell", "history_to_sheet", "history_burst", "order_path", "slow_reader", "service",
           "udf_latency", "memory")


@click.command()
@click.option("--quick", is_flag=True, help="Smallest configuration of each benchmark (~1 minute).")
@click.option("--only", "only", multiple=True, type=click.Choice(BENCHES), help="Run only these (repeatable).")
@click.option("--json", "json_path", default="benchmarks/results.json", show_default=True,
              help="Where to write the JSON.")
@click.option("--memory-seconds", type=float, default=None, help="Length of the memory run (default 600; "
              "quick 6).")
def main(quick: bool, only: tuple[str, ...], json_path: str, memory_seconds: float | None) -> None:
    """Run the ibxl benchmarks and print the table of figures, peers, ratios and targets."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rows = []
    t0 = time.monotonic()
    for name in only or BENCHES:
        click.echo(f"running {name} ...", err=True)
        started = time.monotonic()
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            kwargs = {"seconds": memory_seconds} if name == "memory" and memory_seconds else {}
            rows += module.run(quick=quick, **kwargs)
        except Exception as exc:       # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            rows.append(not_measured(name, "all figures", "-", "-", f"failed: {exc!r}"))
        click.echo(f"  {name}: {time.monotonic() - started:.1f} s", err=True)
    seconds = time.monotonic() - t0
    click.echo(table(rows))
    write_json(json_path, rows, seconds, {"quick": quick, "only": list(only)})
    click.echo(f"\n{len(rows)} figures in {seconds:.0f} s; JSON: {json_path}")


if __name__ == "__main__":
    main(prog_name="python -m benchmarks")
