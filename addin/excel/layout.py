"""The ibxl workbook layout: sheet names, Table names and columns, named ranges, number formats and
status colours. One source of truth for the template builder (``workbooks/build.py``), the pump and
the macros.

A user's workbook may differ: a Watchlist Table fills the columns it has, and one with only
``Symbol`` gets :data:`WATCHLIST_COLUMNS` (``Book.add_table_columns``).
"""

from __future__ import annotations

__all__ = [
    "SHEETS", "TABLES", "WATCHLIST_COLUMNS", "ORDER_INPUT_COLUMNS", "ORDER_OUTPUT_COLUMNS", "ORDERS_COLUMNS",
    "BARS_COLUMNS", "BAR_HEADERS", "HISTORY_PARAMETERS", "POSITIONS_COLUMNS", "ACCOUNT_COLUMNS", "EXECUTIONS_COLUMNS",
    "LOG_COLUMNS", "CONFIG_COLUMNS", "AUDIT_COLUMNS", "PNL_NAMES", "MACROS", "NUMBER_FORMATS", "COLUMN_FORMATS",
    "STATUS_COLOURS", "number_format", "WHOLE_FORMAT", "QUANTITY_COLUMNS", "ID_COLUMNS", "ACCOUNT_TAG_KINDS",
    "ACCOUNT_VALUE_FORMAT", "account_value_format",
    "ANALYSIS_COLUMNS", "ANALYSIS_CORRELATION_NAME",
    "GREEK_TOTALS_COLUMNS",
    "OPTIONS_SIDE_FIELDS", "OPTIONS_COLUMNS", "OPTIONS_PARAMETERS", "OPTIONS_UNDER_PRICE", "OPTIONS_STATUS",
]

SHEETS = ["Config", "Watchlist", "History", "Options", "Orders", "Portfolio", "Analysis", "Executions", "Audit",
          "Log"]

WATCHLIST_COLUMNS = [
    "Symbol", "Bid", "Ask", "Last", "BidSize", "AskSize", "LastSize", "Volume", "Open", "High", "Low",
    "Close", "Change", "ChangePct", "Updated", "DataType",
]
ORDER_INPUT_COLUMNS = [
    "Ref", "Account", "Symbol", "Action", "Quantity", "OrderType", "LimitPrice", "StopPrice", "TrailAmount",
    "TrailPercent", "Offset", "TIF", "GoodTillDate", "OutsideRTH", "TakeProfit", "StopLoss", "OCAGroup", "Transmit",
]
ORDER_OUTPUT_COLUMNS = [
    "Status", "OrderId", "PermId", "Filled", "Remaining", "AvgFillPrice", "Commission", "Message", "Updated",
]
ORDERS_COLUMNS = ORDER_INPUT_COLUMNS + ORDER_OUTPUT_COLUMNS

# History sheet: request parameters (label in column A, value in column B, each value cell a
# workbook-level named range) and the bars Table.
HISTORY_PARAMETERS = [
    # (label, named range, template value, what it means)
    ("Symbol", "HistorySymbol", "GOOG", "instrument in the cell grammar (AAPL, EUR/USD, ESZ6.CME, ...)"),
    ("Duration", "HistoryDuration", "1 Y", "IB durationStr: '30 D', '6 M', '1 Y', ..."),
    ("BarSize", "HistoryBarSize", "1 day", "IB barSize: '1 min', '5 mins', '1 hour', '1 day', ..."),
    ("WhatToShow", "HistoryWhatToShow", "TRADES", "IB whatToShow: TRADES, MIDPOINT, BID, ASK, ..."),
    ("UseRTH", "HistoryUseRTH", True, "TRUE: regular trading hours only"),
    ("EndDateTime", "HistoryEnd", None, "empty: up to now; else the last bar's end (UTC)"),
]
BARS_COLUMNS = ["Date", "Open", "High", "Low", "Close", "Volume", "WAP", "BarCount"]
# addin.market.history's bar columns (index: the bar's time) -> the headers the Bars Table and IB_HISTORY show.
BAR_HEADERS = {"time": "Date", "open": "Open", "high": "High", "low": "Low", "close": "Close", "volume": "Volume",
               "wap": "WAP", "bar_count": "BarCount"}

POSITIONS_COLUMNS = [
    "Account", "Symbol", "ConId", "SecType", "Currency", "Position", "AvgCost", "MarketPrice", "MarketValue",
    "UnrealizedPnL", "RealizedPnL", "Weight",
    # Greeks per position (addin.account.greeks): share-equivalents, currency per vol point / per day, and
    # the delta-adjusted exposure in the contract's currency.
    "Underlying", "Delta", "Gamma", "Vega", "Theta", "DeltaDollars",
]
ACCOUNT_COLUMNS = ["Account", "Tag", "Value", "Currency"]
# Greek totals (addin.account.greeks.greek_totals of the Positions rows): one row per account x underlying,
# then the account's total (Underlying "All"); empty where a position's greek is unknown (never summed as 0).
GREEK_TOTALS_COLUMNS = ["Account", "Underlying", "Delta", "Gamma", "Vega", "Theta", "DeltaDollars"]
# Portfolio P&L cells (label, named range) from reqPnL, in the account's base currency.
PNL_NAMES = [("Daily P&L", "PnLDaily"), ("Unrealized P&L", "PnLUnrealized"), ("Realized P&L", "PnLRealized")]

EXECUTIONS_COLUMNS = [
    "ExecId", "Time", "Account", "Symbol", "ConId", "Side", "Shares", "Price", "OrderId", "PermId", "ClientId",
    "OrderRef", "Commission", "CommissionCurrency", "RealizedPnL", "Exchange",
]
# The orders' audit trail from the journal, newest first (addin.orders.audit.audit_frame); Time in the
# machine's local zone (Excel has no zones).
AUDIT_COLUMNS = ["Time", "Ref", "Event", "Symbol", "Action", "Quantity", "Price", "Status", "Detail", "OrderId",
                 "PermId"]
LOG_COLUMNS = ["Time", "Level", "Source", "Message"]
CONFIG_COLUMNS = ["Key", "Value", "Notes"]

# The Analysis sheet's Tables (issue 18): the report's frames (addin.analysis) carry exactly these columns,
# and the sheet writer fills the Tables of these names. Account "All" is every account together.
# ANALYSIS_CORRELATION_NAME's Table is the correlation matrix: "Symbol" then one column per holding.
ANALYSIS_COLUMNS = {
    # By: SecType, Currency, Exchange, Industry; amounts in the base currency (IB's exchange rates).
    "Exposure": ["Account", "By", "Group", "Long", "Short", "Gross", "Net", "PctNetLiq"],
    # Measures: NetLiquidation, Long, Short, Gross, Net, Leverage, LargestWeight, Herfindahl, DailyPnL,
    # UnrealizedPnL, RealizedPnL, BetaDeltaDollars, VaR95, VaR99, ES95, ES99 (Note: method, window, as of).
    "Summary": ["Account", "Measure", "Value", "Note"],
    "Concentration": ["Account", "Rank", "Symbol", "MarketValue", "Weight"],
    "PositionPnL": ["Account", "Symbol", "ConId", "Position", "MarketValue", "DailyPnL", "UnrealizedPnL",
                    "RealizedPnL"],
    "PositionRisk": ["Account", "Symbol", "ConId", "MarketValue", "DailyVol", "Beta", "BetaDeltaShares",
                     "BetaDeltaDollars"],
    "PnLByDay": ["Date", "Account", "NetLiquidation", "DailyPnL", "RealizedPnL", "Commission", "Fills"],
    "VaRHistory": ["Date", "Account", "VaR95", "VaR99", "ES95", "ES99"],
    "WhatIf": ["Account", "Measure", "Now", "AfterBasket", "Change"],
    "Correlation": ["Symbol"],
}
ANALYSIS_CORRELATION_NAME = "Correlation"

# Options sheet (issue 17): parameters (label in column A, value in column B, each value cell a named range),
# the underlying's price and a status line painted by addin.app.options_sheet, and the Chain Table below.
OPTIONS_PARAMETERS = [
    # (label, named range, template value, what it means)
    ("Underlying", "OptionsUnderlying", "AAPL", "the underlying in the cell grammar (AAPL, SPY, MSFT, ...)"),
    ("Expiry", "OptionsExpiry", "next",
     "a listed date (YYYY-MM-DD), next, monthly, +30d, +2w, +3m; a class after it: next SPXW"),
    ("Strikes", "OptionsStrikes", 10, "how many strikes around the money, or a range such as 200-250"),
]
OPTIONS_UNDER_PRICE = ("Underlying price", "OptionsUnderPrice")   # painted: in-the-money shading compares to it
OPTIONS_STATUS = ("Chain", "OptionsStatus")                       # painted: expiry, strikes, lines, or the error
# One side of the chain: header suffix -> BoardQuote field (CallBid / PutBid ... CallTheta / PutTheta).
OPTIONS_SIDE_FIELDS = [("Bid", "bid"), ("Ask", "ask"), ("Last", "last"), ("Volume", "volume"),
                       ("OpenInterest", "open_interest"), ("IV", "iv"), ("Delta", "delta"), ("Gamma", "gamma"),
                       ("Vega", "vega"), ("Theta", "theta")]
# Calls left, Strike in the middle, puts right; Data: streaming / snapshot / waiting (or the line's error).
OPTIONS_COLUMNS = ([f"Call{h}" for h, _ in OPTIONS_SIDE_FIELDS] + ["Strike"]
                   + [f"Put{h}" for h, _ in OPTIONS_SIDE_FIELDS] + ["Data"])
OPTIONS_HEADER_ROW = 7

# Table name -> (sheet, header row, first column, columns)
TABLES = {
    "Config": ("Config", 1, 1, CONFIG_COLUMNS),
    "Watchlist": ("Watchlist", 1, 1, WATCHLIST_COLUMNS),
    "Bars": ("History", 1, 4, BARS_COLUMNS),
    "Orders": ("Orders", 1, 1, ORDERS_COLUMNS),
    "Positions": ("Portfolio", 1, 1, POSITIONS_COLUMNS),
    # right of the Positions Table (A..R) and the P&L cells (S..T), a spacer column between
    "Account": ("Portfolio", 1, 22, ACCOUNT_COLUMNS),
    # under the pie chart (anchored at AA2, 9 cm high: rows 2..19), right of the Account Table (V..Y) and a
    # spacer column: every Portfolio Table grows down into its own columns, none into another's, and row 1
    # keeps the headers of Positions and Account only.
    "GreekTotals": ("Portfolio", 21, 27, GREEK_TOTALS_COLUMNS),
    "Executions": ("Executions", 1, 1, EXECUTIONS_COLUMNS),
    "Audit": ("Audit", 1, 1, AUDIT_COLUMNS),
    "Chain": ("Options", OPTIONS_HEADER_ROW, 1, OPTIONS_COLUMNS),
    "LogEntries": ("Log", 1, 1, LOG_COLUMNS),
    # Analysis (workbooks/build.py _analysis): Summary top-left under the note, four charts to its right (2 x 2,
    # rows 4-40), the other Tables side by side from row 43 (each grows down into empty columns), then the charts' data
    # Tables (Account All, filled by addin.app.analysis_sheet), Correlation last: it grows to the right too.
    "Summary": ("Analysis", 4, 1, ANALYSIS_COLUMNS["Summary"]),
    "Exposure": ("Analysis", 43, 6, ANALYSIS_COLUMNS["Exposure"]),
    "Concentration": ("Analysis", 43, 15, ANALYSIS_COLUMNS["Concentration"]),
    "PositionPnL": ("Analysis", 43, 21, ANALYSIS_COLUMNS["PositionPnL"]),
    "PositionRisk": ("Analysis", 43, 30, ANALYSIS_COLUMNS["PositionRisk"]),
    "WhatIf": ("Analysis", 43, 39, ANALYSIS_COLUMNS["WhatIf"]),
    "PnLByDay": ("Analysis", 43, 45, ANALYSIS_COLUMNS["PnLByDay"]),
    "VaRHistory": ("Analysis", 43, 53, ANALYSIS_COLUMNS["VaRHistory"]),
    "ChartSecType": ("Analysis", 43, 60, ["SecType", "Gross", "Net"]),
    "ChartCurrency": ("Analysis", 43, 64, ["Currency", "Gross", "Net"]),
    "ChartEquity": ("Analysis", 43, 68, ["Date", "NetLiquidation"]),
    "ChartVaR": ("Analysis", 43, 71, ["Date", "VaR95", "VaR99"]),
    "Correlation": ("Analysis", 43, 75, ANALYSIS_COLUMNS["Correlation"]),
}

# The macros buttons call (addin.app.macros), with their captions.
MACROS = [
    ("connect", "Connect"),
    ("disconnect", "Disconnect"),
    ("start_streaming", "Start streaming"),
    ("stop_streaming", "Stop streaming"),
    ("pull_history", "Pull history"),
    ("place_orders", "Place orders"),
    ("place_selected_orders", "Place selected"),    # fits the button in LibreOffice too
    ("cancel_selected", "Cancel selected"),
    ("cancel_all", "Cancel all"),
    ("kill_switch", "KILL SWITCH"),
    ("reset_kill_switch", "Reset kill switch"),
    ("refresh_portfolio", "Refresh portfolio"),
    ("refresh_audit", "Refresh audit"),
    ("refresh_analysis", "Refresh analysis"),
    ("refresh_options", "Refresh options"),
    ("option_to_order", "Option to order"),
]

NUMBER_FORMATS = {
    "price": "#,##0.00###",          # 2 to 5 decimals: stocks and FX on one format
    # Quantities and sizes: up to 8 decimals (BTC trades 0.0001). Excel shows a whole number in this format
    # with a trailing dot ("10."), so the template adds a conditional format that shows whole numbers as
    # WHOLE_FORMAT (QUANTITY_COLUMNS, every row of the column).
    "quantity": "#,##0.########",
    "count": "#,##0",                # whole numbers only: BarCount, day trades left
    "money": "#,##0.00",
    "percent": "0.00%",              # ChangePct, Weight and Cushion hold fractions (0.0123 = 1.23%)
    "percent_number": "0.00",        # TrailPercent holds a number of percent (1.5 = 1.5%), as IB's trailingPercent
    "ratio": "0.00",                 # Leverage
    "time": "yyyy-mm-dd hh:mm:ss",   # UTC (the Audit's Time: local)
    "date": "yyyy-mm-dd",
    # TRUE/FALSE cells: Excel shows a logical value as TRUE/FALSE whatever its format; LibreOffice shows it
    # as 1/0 unless its format says TRUE/FALSE.
    "bool": '"TRUE";"TRUE";"FALSE"',
    "id": "0",                       # conId, orderId, permId: whole, no separators (they are names, not amounts)
    "greek": "#,##0.00##",           # a position's Delta, Gamma (share-equivalents), Vega, Theta (currency)
    "option_greek": "0.0000",        # an option's delta, gamma, vega, theta: per share, 4 decimals
}
#: What a whole quantity shows as (the conditional format over QUANTITY_COLUMNS).
WHOLE_FORMAT = "#,##0"
_FORMAT_OF_COLUMN = {
    "price": ["Bid", "Ask", "Last", "Open", "High", "Low", "Close", "Change", "LimitPrice", "StopPrice",
              "TrailAmount", "Offset", "TakeProfit", "StopLoss", "AvgFillPrice", "AvgCost", "MarketPrice", "Price",
              "WAP", "Strike", "CallBid", "CallAsk", "CallLast", "PutBid", "PutAsk", "PutLast"],
    "quantity": ["Quantity", "Filled", "Remaining", "Position", "Shares", "BidSize", "AskSize", "LastSize",
                 "Volume", "CallVolume", "PutVolume", "CallOpenInterest", "PutOpenInterest"],
    "count": ["BarCount"],
    "money": ["Commission", "MarketValue", "UnrealizedPnL", "RealizedPnL", "DeltaDollars"],
    "percent": ["ChangePct", "Weight", "CallIV", "PutIV"],
    "option_greek": ["CallDelta", "CallGamma", "CallVega", "CallTheta", "PutDelta", "PutGamma", "PutVega",
                     "PutTheta"],
    "percent_number": ["TrailPercent"],
    "time": ["Updated", "Time", "GoodTillDate", "Date"],
    "id": ["OrderId", "PermId", "ConId", "ClientId"],
    "bool": ["OutsideRTH", "Transmit"],
    "greek": ["Delta", "Gamma", "Vega", "Theta"],
}
COLUMN_FORMATS = {col: NUMBER_FORMATS[kind] for kind, cols in _FORMAT_OF_COLUMN.items() for col in cols}
QUANTITY_COLUMNS = frozenset(_FORMAT_OF_COLUMN["quantity"])
ID_COLUMNS = frozenset(_FORMAT_OF_COLUMN["id"])

# The Account Table's Value by the kind of its Tag (reqAccountUpdates' keys): amounts in the row's Currency
# (the default), fractions shown as percentages, whole counts, ratios. Text values (AccountType) show as text.
ACCOUNT_TAG_KINDS = {
    "percent": ("Cushion", "LookAheadCushion"),
    "count": ("DayTradesRemaining", "DayTradesRemainingT+1", "DayTradesRemainingT+2", "DayTradesRemainingT+3",
              "DayTradesRemainingT+4", "HighestSeverity", "LookAheadNextChange", "SegmentTitle-S"),
    "ratio": ("Leverage", "Leverage-S"),
}
ACCOUNT_VALUE_FORMAT = NUMBER_FORMATS["money"]


def account_value_format(tag: str) -> str:
    """The number format of an Account Value by its ``tag`` (``"Cushion"`` -> ``"0.00%"``)."""
    for kind, tags in ACCOUNT_TAG_KINDS.items():
        if tag in tags:
            return NUMBER_FORMATS[kind]
    return ACCOUNT_VALUE_FORMAT


# Order Status text -> fill colour (hex RGB). IB's statuses plus ibxl's own refusals.
STATUS_COLOURS = {
    "Filled": "C6EFCE",          # green
    "Submitted": "DDEBF7",       # blue
    "PreSubmitted": "DDEBF7",
    "PendingSubmit": "FFF2CC",   # yellow: on its way
    "PendingCancel": "FFF2CC",
    "ApiPending": "FFF2CC",
    "Cancelled": "E7E6E6",       # grey
    "ApiCancelled": "E7E6E6",
    "Inactive": "FCE4D6",        # orange
    "Refused": "FFC7CE",         # red: a risk check or bad input; nothing sent
    "Rejected": "FFC7CE",
    "Error": "FFC7CE",
}


def number_format(column: str) -> str | None:
    """The number format of a standard column (``"Bid"`` -> ``"#,##0.00###"``), or None."""
    return COLUMN_FORMATS.get(column)
