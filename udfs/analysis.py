"""Portfolio analysis worksheet functions (issue 18): read-only dynamic arrays of the analysis report.

Each reads the report the runtime computes (``Runtime.analysis``: exposure, risk, per-position P&L,
correlation; amounts in the account's base currency, "All" = every account together) through the
read-only facade, in the background (``addin.app.background``): the cell shows ``#IBXL: loading the
portfolio analysis`` until the report is in, then fills in on its own. A report is computed at most
once a minute per window (the argument set includes the minute), and every function with the same
window shares it. No function here waits on IB, places, modifies or cancels anything.
"""

import time

import xlwings as xw

from addin.analysis.exposure import BY

from .functions import CATEGORY, _answer, _cell, _frame_rows, _reader, _safely

__all__ = ["IB_EXPOSURE", "IB_RISK", "IB_PNL_BY_POSITION", "IB_CORRELATION"]

REFRESH_SECONDS = 60


def _window(window) -> int | None:
    if window is None or (isinstance(window, str) and not window.strip()):
        return None
    try:
        days = float(window)
    except (TypeError, ValueError):
        raise ValueError(f"window: expected a number of daily returns such as 252, got {window!r}") from None
    if not days.is_integer() or not 20 <= days <= 2520:
        raise ValueError(f"window: expected a whole number of daily returns from 20 to 2520, got {window!r}")
    return int(days)


def _report(caller, window=None) -> dict:
    days = _window(window)
    rt = _reader()
    args = ("analysis", days, int(time.time() // REFRESH_SECONDS))
    return _answer(rt, rt.request(args, lambda h: rt.analysis(window_days=days), "the portfolio analysis",
                                  _cell(caller)))


@xw.func(category=CATEGORY, volatile=True, call_in_wizard=False)
@xw.arg("by", doc="SecType, Currency, Exchange or Industry; omitted: every grouping")
def IB_EXPOSURE(by=None, caller=None):
    """Exposure of each account and All (base currency, IB's exchange rates): Account, By, Group, Long, Short,
    Gross, Net, PctNetLiq (Net / NetLiquidation, a fraction), one row per group."""
    def run():
        want = None
        if by is not None and not (isinstance(by, str) and not by.strip()):
            names = {k.lower(): k for k in BY}
            want = names.get(str(by).strip().lower().replace(" ", ""))
            if want is None:
                raise ValueError(f"by: {by!r} is not one of {', '.join(BY)}")
        df = _report(caller)["Exposure"]
        return _frame_rows(df[df["By"] == want] if want else df)
    return _safely(run)


@xw.func(category=CATEGORY, volatile=True, call_in_wizard=False)
@xw.arg("measure", doc="VaR95, VaR99, ES95, ES99, Leverage, Herfindahl, BetaDeltaDollars, NetLiquidation, ...; "
                       "omitted: the whole Summary table")
@xw.arg("window", doc="daily returns used (20 to 2520); omitted: the config's [analysis] window_days (252)")
def IB_RISK(measure=None, window=None, caller=None):
    """Risk and summary measures per account and All: with a measure, Account and Value rows; without, the
    Summary table (Account, Measure, Value, Note; the VaR rows' Note states the method)."""
    def run():
        df = _report(caller, window)["Summary"]
        if measure is None or (isinstance(measure, str) and not measure.strip()):
            return _frame_rows(df)
        names = {m.lower(): m for m in df["Measure"]}
        want = names.get(str(measure).strip().lower())
        if want is None:
            raise ValueError(f"measure: {measure!r} is not one of {', '.join(dict.fromkeys(df['Measure']))}")
        return _frame_rows(df[df["Measure"] == want][["Account", "Value"]])
    return _safely(run)


@xw.func(category=CATEGORY, volatile=True, call_in_wizard=False)
def IB_PNL_BY_POSITION(caller=None):
    """Per-position P&L from reqPnLSingle (base currency): Account, Symbol, ConId, Position, MarketValue,
    DailyPnL, UnrealizedPnL, RealizedPnL; each account's rows, then All's."""
    return _safely(lambda: _frame_rows(_report(caller)["PositionPnL"]))


@xw.func(category=CATEGORY, volatile=True, call_in_wizard=False)
def IB_CORRELATION(caller=None):
    """Correlation matrix of the holdings' daily returns (the config's window): Symbol, then one column per
    holding; symmetric, unit diagonal."""
    return _safely(lambda: _frame_rows(_report(caller)["Correlation"]))
