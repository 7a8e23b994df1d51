"""``ibxl excel``: Excel integration on Windows: ``install`` / ``uninstall`` the RTD server.

``ibxl excel install`` registers the COM class ``ibxl.rtd`` (``addin.service.rtd_com``) for the current
user, so ``=RTD("ibxl.rtd",,"AAPL","bid")`` streams quotes from the ibxl service into cells. On Linux
and macOS there is no RTD: both commands exit with an error saying so (formulas keep the recalculation
path).
"""

from __future__ import annotations

import click

__all__ = ["excel"]


@click.group("excel")
def excel() -> None:
    """Excel on Windows: install or remove the RTD server (ibxl.rtd)."""


def _run(action: str) -> list[str]:
    from ..service import rtd_com
    try:
        return getattr(rtd_com, action)()
    except rtd_com.NeedsWindows as exc:
        raise click.ClickException(str(exc)) from None
    except ImportError as exc:
        raise click.ClickException(f"pywin32 is needed for RTD ({exc}); pip install pywin32") from None
    except OSError as exc:
        raise click.ClickException(f"the registry refused: {exc}") from None


@excel.command()
def install() -> None:
    """Register the RTD server ibxl.rtd for the current user (no administrator rights needed)."""
    keys = _run("install")
    click.echo(f"ibxl.rtd registered ({len(keys)} registry keys under HKEY_CURRENT_USER).")
    click.echo('In Excel: =RTD("ibxl.rtd",,"AAPL","bid"); restart Excel if it was running.')


@excel.command()
def uninstall() -> None:
    """Remove the current user's RTD server registration."""
    keys = _run("uninstall")
    click.echo(f"ibxl.rtd removed ({len(keys)} registry keys)." if keys else "ibxl.rtd was not registered.")
