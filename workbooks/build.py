"""Build the ibxl template workbooks, so every sheet, Table, format and chart is reviewable as code.

    python -m workbooks.build            # writes workbooks/ibxl.xlsx and workbooks/ibxl.xlsm
    python workbooks/build.py --out DIR  # somewhere else

- ``ibxl.xlsx``: the plain workbook for headless use (``ibxl run``, the openpyxl adapter).
- ``ibxl.xlsm``: the same sheets plus a ``Buttons`` sheet and an active ``xlwings.conf`` sheet, built on
  the macro-enabled ``quickstart_standalone.xlsm`` that ships inside the xlwings package (its VBA
  project holds xlwings' ``RunPython``; openpyxl cannot author VBA). The Buttons sheet holds a form
  button per macro whose macro is ``'RunPython "import addin.app.macros as m; m.<macro>()"'``
  (``workbooks/buttons.py``), so nothing needs importing; ``workbooks/ibxl_macros.bas`` has the same
  calls as VBA Subs for users who bind their own buttons or shortcuts.

The output is deterministic (fixed document dates and zip timestamps), so the committed files can be
checked against what this script makes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import re
import sys
import zipfile
from pathlib import Path

import openpyxl
from openpyxl.chart import BarChart, LineChart, PieChart, Reference
from openpyxl.formatting.rule import ColorScaleRule, FormulaRule, Rule
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.styles.differential import DifferentialStyle
from openpyxl.styles.numbers import NumberFormat
from openpyxl.utils import get_column_letter
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.filters import AutoFilter
from openpyxl.worksheet.table import Table, TableColumn, TableStyleInfo

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from addin.app import analysis_sheet  # noqa: E402
from addin.excel import layout  # noqa: E402
from addin.protocol import orders as vocabulary  # noqa: E402
from workbooks import buttons  # noqa: E402

HERE = Path(__file__).resolve().parent
FIXED_TIME = dt.datetime(2026, 1, 1, 0, 0, 0)
MAX_ROW = 1048576           # Excel's last row: conditional formats cover every row a Table may reach
ID_WIDTH = 14               # PermId has up to 10 digits; never ###
QUANTITY_WIDTH = 13         # a size with 8 decimals (0.01829094) or a volume of 8 digits
_CF_NUMFMT_IDS: dict[str, int] = {}   # number formats of conditional formats -> their ids in the styles part
HEADER_FILL = PatternFill("solid", fgColor="1F4E78")
OUTPUT_FILL = PatternFill("solid", fgColor="548235")   # Orders: columns ibxl writes
HEADER_FONT = Font(bold=True, color="FFFFFF")
TITLE_FONT = Font(bold=True, size=12)

WATCHLIST_SAMPLES = ["AAPL", "MSFT", "GOOG", "SPY", "EUR/USD", "BTC/USD.PAXOS", "ES.CME", "^SPX.CBOE"]

# Orders for the demo: good ones first, then rows the risk checks refuse on purpose (their Ref says why).
# Prices are left blank: ``ibxl demo`` writes them from the live quote when it places the rows
# (addin/app/demo.py), so the verdicts hold at any date and hour.
_O = dict.fromkeys(layout.ORDER_INPUT_COLUMNS)
ORDER_SAMPLES = [
    {**_O, "Ref": "DEMO-001", "Symbol": "AAPL", "Action": "BUY", "Quantity": 10, "OrderType": "MKT",
     "TIF": "DAY", "OutsideRTH": False, "Transmit": True},
    {**_O, "Ref": "DEMO-002", "Symbol": "MSFT", "Action": "BUY", "Quantity": 5, "OrderType": "LMT",
     "TIF": "DAY", "OutsideRTH": False, "Transmit": True},
    {**_O, "Ref": "DEMO-003", "Symbol": "SPY", "Action": "BUY", "Quantity": 3, "OrderType": "STP",
     "TIF": "GTC", "OutsideRTH": False, "Transmit": True},
    {**_O, "Ref": "DEMO-004", "Symbol": "AAPL", "Action": "BUY", "Quantity": 10, "OrderType": "LMT",
     "TIF": "GTC", "OutsideRTH": False,
     "Transmit": True},
    {**_O, "Ref": "DEMO-005", "Symbol": "MSFT", "Action": "BUY", "Quantity": 5, "OrderType": "MKT",
     "TIF": "DAY", "OutsideRTH": False, "Transmit": True},
    {**_O, "Ref": "DEMO-006", "Symbol": "BTC/USD.PAXOS", "Action": "BUY", "Quantity": 0.05, "OrderType": "LMT",
     "TIF": "DAY", "OutsideRTH": False, "Transmit": True},
    # The option is chosen when the demo places it (a listed expiry a week or more ahead, the strike
    # nearest the money): a contract typed here would expire.
    {**_O, "Ref": "DEMO-007", "Symbol": "AAPL call (chosen by ibxl demo)", "Action": "BUY", "Quantity": 2,
     "OrderType": "LMT", "TIF": "DAY", "OutsideRTH": False, "Transmit": True},
    {**_O, "Ref": "BAD-QUANTITY-TOO-BIG", "Symbol": "AAPL", "Action": "BUY", "Quantity": 100000,
     "OrderType": "MKT", "TIF": "DAY", "OutsideRTH": False, "Transmit": True},
    {**_O, "Ref": "BAD-PRICE-FAR-OFF", "Symbol": "MSFT", "Action": "BUY", "Quantity": 10, "OrderType": "LMT",
     "TIF": "DAY", "OutsideRTH": False, "Transmit": True},
    {**_O, "Ref": "BAD-UNKNOWN-SYMBOL", "Symbol": "ZZZZ", "Action": "BUY", "Quantity": 10, "OrderType": "MKT",
     "TIF": "DAY", "OutsideRTH": False, "Transmit": True},
    {**_O, "Ref": "BAD-OFF-TICK-GRID", "Symbol": "SPY", "Action": "BUY", "Quantity": 10, "OrderType": "LMT",
     "TIF": "DAY", "OutsideRTH": False, "Transmit": True},
    {**_O, "Ref": "BAD-TEXT-QUANTITY", "Symbol": "AAPL", "Action": "BUY", "Quantity": "ten", "OrderType": "MKT",
     "TIF": "DAY", "OutsideRTH": False, "Transmit": True},
]

# The Orders sheet's drop-downs: the order vocabulary (addin/protocol/orders.py), nothing else.
ORDER_DROPDOWNS = {
    "Action": ("BUY", "SELL"),
    "OrderType": vocabulary.ORDER_TYPE_CODES,
    "TIF": vocabulary.TIF_CODES,
    "OutsideRTH": ("TRUE", "FALSE"),
    "Transmit": ("TRUE", "FALSE"),
}
ORDER_PROMPTS = {
    "TrailPercent": "A number of percent: 1.5 means 1.5% (a cell formatted as % is read as it shows).",
    "Offset": "TRAIL LIMIT: the limit's distance beyond the stop; REL: the peg offset. In price units.",
    "GoodTillDate": "TIF GTD only: date and time in UTC (or IB's text, e.g. 20261231 16:00:00 US/Eastern).",
    "StopPrice": "STP, STP LMT: the stop; MIT, LIT: the trigger; TRAIL, TRAIL LIMIT: the initial stop.",
}

# Config Table rows: [risk] keys a workbook may tighten (addin/config.py); never loosen.
CONFIG_ROWS = [
    ("max_quantity", 100, "largest quantity of one order (shares, contracts, units)"),
    ("max_notional", 25000, "largest value of one order, in the base currency"),
    ("price_band_pct", 5, "a limit or stop price at most this % away from the market"),
    ("max_position", 500, "largest position per instrument after the order"),
    ("max_open_orders", 20, "open orders at most"),
    ("max_orders_per_minute", 10, "new orders per minute at most"),
    ("daily_loss_limit", 2000, "no new orders once today's P&L is below minus this"),
    ("allow_short", False, "TRUE lets a SELL go below zero (only if your config file allows it)"),
    ("round_to_tick", False, "TRUE rounds prices to the tick grid; FALSE refuses them"),
    ("read_only", False, "TRUE: never send orders from this workbook"),
]
CONFIG_NOTE = ("This sheet may only tighten the limits in your own config file (~/.ibxl/config.toml); "
               "looser values, allow_live and connection settings are ignored with a warning.")


# -------------------------------------------------------------------------------------------------
# helpers
# -------------------------------------------------------------------------------------------------

def _add_table(ws, name: str, top: int, left: int, columns: list[str], rows: list[list] | None = None,
               *, style: str = "TableStyleMedium2", widths: dict[str, float] | None = None,
               formats: dict[str, str] | None = None) -> str:
    """Write a header, rows (at least one, maybe empty) and a Table over them; format the columns.

    A column's number format is its column style (``<col style>``), so every row the Table will ever
    have shows it: Excel gives a new cell its column's style, and so does ibxl's openpyxl adapter. The
    sample rows' cells get it too. Quantity columns show whole numbers without Excel's trailing dot
    through a conditional format over the whole column. ``formats``: number formats of columns that
    ``layout.number_format`` does not know."""
    rows = rows or [[None] * len(columns)]
    for j, header in enumerate(columns):
        c = ws.cell(row=top, column=left + j, value=header)
        c.font = HEADER_FONT
        c.fill = HEADER_FILL
        c.alignment = Alignment(horizontal="center")
    for i, row in enumerate(rows, start=1):
        for j, value in enumerate(row):
            ws.cell(row=top + i, column=left + j, value=value)
    bottom = top + len(rows)
    ref = f"{get_column_letter(left)}{top}:{get_column_letter(left + len(columns) - 1)}{bottom}"
    table = Table(displayName=name, ref=ref, autoFilter=AutoFilter(ref=ref),
                  tableColumns=[TableColumn(id=i + 1, name=c) for i, c in enumerate(columns)])
    table.tableStyleInfo = TableStyleInfo(name=style, showRowStripes=True)
    ws.add_table(table)
    for j, header in enumerate(columns):
        letter = get_column_letter(left + j)
        fmt = layout.number_format(header) or (formats or {}).get(header)
        if fmt:
            ws.column_dimensions[letter].number_format = fmt
            for r in range(top + 1, bottom + 1):
                ws.cell(row=r, column=left + j).number_format = fmt
        if header in layout.QUANTITY_COLUMNS:
            _whole_numbers_plain(ws, f"{letter}{top + 1}:{letter}{MAX_ROW}")
        width = (widths or {}).get(header, max(10, len(header) + 3))
        if header in layout.ID_COLUMNS:
            width = max(width, ID_WIDTH)
        elif header in layout.QUANTITY_COLUMNS:      # 0.01829094 BTC, 1,234,567.5 shares
            width = max(width, QUANTITY_WIDTH)
        ws.column_dimensions[letter].width = width
    return ref


def _whole_numbers_plain(ws, cells: str) -> None:
    """Whole numbers in ``cells`` show as ``#,##0`` (not "10." as ``#,##0.########`` would show them)."""
    first = cells.split(":")[0]
    _format_rule(ws, cells, f"AND(ISNUMBER({first}),{first}=INT({first}))", layout.WHOLE_FORMAT)


def _format_rule(ws, cells: str, formula: str, fmt: str) -> None:
    """A conditional format on ``cells`` that shows number format ``fmt`` where ``formula`` (relative to
    the first cell) is TRUE: Excel and LibreOffice apply it to every row of the range, present or not."""
    fmt_id = _CF_NUMFMT_IDS.setdefault(fmt, 300 + len(_CF_NUMFMT_IDS))
    ws.conditional_formatting.add(cells, Rule(type="expression", formula=[formula], dxf=DifferentialStyle(
        numFmt=NumberFormat(numFmtId=fmt_id, formatCode=fmt))))


def _name(wb, name: str, sheet: str, address: str) -> None:
    wb.defined_names[name] = DefinedName(name, attr_text=f"{_quote(sheet)}!{address}")


def _quote(sheet: str) -> str:
    return f"'{sheet}'" if re.search(r"[^A-Za-z0-9_]", sheet) else sheet


def _col(table: str, column: str) -> str:
    _, _, left, columns = layout.TABLES[table]
    return get_column_letter(left + columns.index(column))


# -------------------------------------------------------------------------------------------------
# sheets
# -------------------------------------------------------------------------------------------------

def _config(wb) -> None:
    ws = wb.create_sheet("Config")
    _add_table(ws, "Config", 1, 1, layout.CONFIG_COLUMNS, [list(r) for r in CONFIG_ROWS],
               widths={"Key": 24, "Value": 12, "Notes": 70})
    for i, (_key, value, _notes) in enumerate(CONFIG_ROWS, start=2):
        if isinstance(value, bool):            # LibreOffice shows a logical value as TRUE/FALSE only so
            ws.cell(row=i, column=2).number_format = layout.NUMBER_FORMATS["bool"]
    ws.cell(row=len(CONFIG_ROWS) + 3, column=1, value=CONFIG_NOTE).font = Font(italic=True)
    ws.freeze_panes = "A2"


def _watchlist(wb) -> None:
    ws = wb.create_sheet("Watchlist")
    rows = [[s] + [None] * (len(layout.WATCHLIST_COLUMNS) - 1) for s in WATCHLIST_SAMPLES]
    _add_table(ws, "Watchlist", 1, 1, layout.WATCHLIST_COLUMNS, rows,
               widths={"Symbol": 16, "Updated": 20, "DataType": 12, "Volume": 16})
    ws.freeze_panes = "B2"


def _history(wb) -> None:
    ws = wb.create_sheet("History")
    ws.cell(row=1, column=1, value="History request").font = TITLE_FONT
    for i, (label, name, value, _meaning) in enumerate(layout.HISTORY_PARAMETERS, start=2):
        ws.cell(row=i, column=1, value=label).font = Font(bold=True)
        ws.cell(row=i, column=2, value=value)
        _name(wb, name, "History", f"$B${i}")
    note_row = len(layout.HISTORY_PARAMETERS) + 3
    ws.cell(row=note_row, column=1, value="Parameters").font = Font(bold=True)
    for i, (label, _, _value, meaning) in enumerate(layout.HISTORY_PARAMETERS, start=note_row + 1):
        ws.cell(row=i, column=1, value=f"{label}: {meaning}").font = Font(italic=True, color="595959")
    ws.column_dimensions["A"].width = 14
    ws.column_dimensions["B"].width = 34    # wide enough for the parameter notes below to show whole
    ws.column_dimensions["C"].width = 3
    _add_table(ws, "Bars", 1, 4, layout.BARS_COLUMNS, widths={"Date": 20, "Volume": 16})
    _format_rule(ws, f"D2:D{MAX_ROW}", "AND(ISNUMBER(D2),D2=INT(D2))", layout.NUMBER_FORMATS["date"])  # daily bars
    ws.freeze_panes = "A2"

    chart = LineChart()
    chart.title = "Close"
    chart.y_axis.title = "Price"
    # short date labels: a year of "yyyy-mm-dd" labels overlapped in the render (rotated labels do not
    # survive openpyxl's re-read: an empty text run comes back as "None")
    chart.x_axis.number_format = "mmm yy"
    chart.height, chart.width = 10, 26
    close_col = 4 + layout.BARS_COLUMNS.index("Close")
    chart.add_data(Reference(ws, min_col=close_col, min_row=1, max_row=2), titles_from_data=True)
    chart.set_categories(Reference(ws, min_col=4, min_row=2, max_row=2))
    chart.legend = None
    ws.add_chart(chart, "M2")


ITM_FILL = PatternFill("solid", bgColor="FFF2CC")     # Options: in-the-money calls and puts (a dxf: bgColor)


def _options(wb) -> None:
    """The Options sheet: parameters (named cells), the underlying's price and a status line (painted by
    addin.app.options_sheet), the Chain Table below them, and in-the-money shading against the price."""
    ws = wb.create_sheet("Options")
    rows = [(label, name, value, meaning) for label, name, value, meaning in layout.OPTIONS_PARAMETERS]
    rows += [(layout.OPTIONS_UNDER_PRICE[0], layout.OPTIONS_UNDER_PRICE[1], None, "painted: last, else mid"),
             (layout.OPTIONS_STATUS[0], layout.OPTIONS_STATUS[1], None, "painted: expiry, strikes, lines")]
    for i, (label, name, value, meaning) in enumerate(rows, start=1):
        ws.cell(row=i, column=1, value=label).font = Font(bold=True)
        ws.cell(row=i, column=2, value=value)
        ws.cell(row=i, column=3, value=meaning).font = Font(italic=True, color="595959")
        _name(wb, name, "Options", f"$B${i}")
    ws.cell(row=4, column=2).number_format = layout.NUMBER_FORMATS["price"]
    top = layout.TABLES["Chain"][1]
    _add_table(ws, "Chain", top, 1, layout.OPTIONS_COLUMNS, widths={"Strike": 10, "Data": 12, "CallOpenInterest": 13,
                                                                     "PutOpenInterest": 13})
    ws.column_dimensions["A"].width = 17          # the parameter labels sit above CallBid
    strike = _col("Chain", "Strike")
    first = f"${strike}{top + 1}"
    price = layout.OPTIONS_UNDER_PRICE[1]
    calls = f"A{top + 1}:{get_column_letter(layout.OPTIONS_COLUMNS.index('Strike'))}{MAX_ROW}"
    puts = (f"{get_column_letter(layout.OPTIONS_COLUMNS.index('Strike') + 2)}{top + 1}:"
            f"{_col('Chain', 'PutTheta')}{MAX_ROW}")
    for cells, op in ((calls, "<"), (puts, ">")):
        ws.conditional_formatting.add(cells, FormulaRule(
            formula=[f"AND(ISNUMBER({first}),ISNUMBER({price}),{first}{op}{price})"], fill=ITM_FILL))
    ws.freeze_panes = f"A{top + 1}"


def _orders(wb) -> None:
    ws = wb.create_sheet("Orders")
    rows = [[o.get(c) for c in layout.ORDERS_COLUMNS] for o in ORDER_SAMPLES]
    _add_table(ws, "Orders", 1, 1, layout.ORDERS_COLUMNS, rows,
               widths={"Ref": 24, "Symbol": 16, "Message": 60, "Updated": 20, "Account": 13})
    first_out = len(layout.ORDER_INPUT_COLUMNS) + 1
    for j in range(len(layout.ORDER_OUTPUT_COLUMNS)):
        ws.cell(row=1, column=first_out + j).fill = OUTPUT_FILL
    last = MAX_ROW
    status = _col("Orders", "Status")
    for text, colour in layout.STATUS_COLOURS.items():
        ws.conditional_formatting.add(
            f"{status}2:{status}{last}",
            FormulaRule(formula=[f'${status}2="{text}"'], fill=PatternFill("solid", bgColor=colour), stopIfTrue=True),
        )
    for column, options in ORDER_DROPDOWNS.items():
        text = ",".join(options)
        dv = DataValidation(type="list", formula1=f'"{text}"', allow_blank=True, errorTitle=column,
                            error=f"{column}: one of {text}", showErrorMessage=True)
        letter = _col("Orders", column)
        dv.add(f"{letter}2:{letter}{last}")
        ws.add_data_validation(dv)
    for column, prompt in ORDER_PROMPTS.items():       # the unit of a column, shown when its cell is selected
        dv = DataValidation(allow_blank=True, promptTitle=column, prompt=prompt, showInputMessage=True)
        letter = _col("Orders", column)
        dv.add(f"{letter}2:{letter}{last}")
        ws.add_data_validation(dv)
    ws.freeze_panes = "B2"


def _portfolio(wb) -> None:
    ws = wb.create_sheet("Portfolio")
    _add_table(ws, "Positions", 1, 1, layout.POSITIONS_COLUMNS, widths={"Symbol": 16, "Account": 13})
    _add_table(ws, "Account", 1, layout.TABLES["Account"][2], layout.ACCOUNT_COLUMNS,
               widths={"Tag": 34, "Value": 18, "Account": 13})
    tag, value = _col("Account", "Tag"), _col("Account", "Value")
    ws.column_dimensions[value].number_format = layout.ACCOUNT_VALUE_FORMAT
    for kind, tags in layout.ACCOUNT_TAG_KINDS.items():     # Value formatted by the kind of its Tag
        test = ",".join(f'${tag}2="{t}"' for t in tags)
        _format_rule(ws, f"{value}2:{value}{MAX_ROW}", f"OR({test})", layout.NUMBER_FORMATS[kind])
    ws.column_dimensions[get_column_letter(layout.TABLES["Account"][2] - 1)].width = 3   # spacer before Account
    ws.cell(row=1, column=19, value="P&L (base currency)").font = TITLE_FONT
    for i, (label, name) in enumerate(layout.PNL_NAMES, start=2):
        ws.cell(row=i, column=19, value=label).font = Font(bold=True)
        ws.cell(row=i, column=20).number_format = layout.NUMBER_FORMATS["money"]
        _name(wb, name, "Portfolio", f"$T${i}")
    ws.column_dimensions["S"].width = 18
    ws.column_dimensions["T"].width = 14
    _, totals_row, totals_col, _ = layout.TABLES["GreekTotals"]
    ws.cell(row=totals_row - 1, column=totals_col,
            value="Greek totals per account x underlying, then per account (All)").font = TITLE_FONT
    _add_table(ws, "GreekTotals", totals_row, totals_col, layout.GREEK_TOTALS_COLUMNS,
               widths={"Account": 13, "Underlying": 12, "DeltaDollars": 16})
    ws.freeze_panes = "A2"

    pie = PieChart()
    pie.title = "Position weights"
    weight = 1 + layout.POSITIONS_COLUMNS.index("Weight")
    symbol = 1 + layout.POSITIONS_COLUMNS.index("Symbol")
    pie.add_data(Reference(ws, min_col=weight, min_row=1, max_row=2), titles_from_data=True)
    pie.set_categories(Reference(ws, min_col=symbol, min_row=2, max_row=2))
    pie.height, pie.width = 9, 12
    ws.add_chart(pie, f"{get_column_letter(layout.TABLES['Account'][2] + len(layout.ACCOUNT_COLUMNS) + 1)}2")


# Analysis: number formats of the columns layout.number_format does not know, and of the Summary / WhatIf
# values by their Measure (money unless listed).
_MONEY, _PERCENT, _RATIO = (layout.NUMBER_FORMATS[k] for k in ("money", "percent", "ratio"))
_FINE_RATIO = "0.00##"           # leverage 0.0046 must not read 0.00
ANALYSIS_FORMATS = {
    **dict.fromkeys(["Long", "Short", "Gross", "Net", "DailyPnL", "NetLiquidation", "BetaDeltaShares",
                     "BetaDeltaDollars", "VaR95", "VaR99", "ES95", "ES99", "Value", "Now", "AfterBasket",
                     "Change"], _MONEY),
    "PctNetLiq": _PERCENT, "DailyVol": _PERCENT, "Beta": _FINE_RATIO,
    "Rank": layout.NUMBER_FORMATS["count"], "Fills": layout.NUMBER_FORMATS["count"],
}
ANALYSIS_MEASURE_FORMATS = {_PERCENT: ("LargestWeight",), _FINE_RATIO: ("Leverage", "Herfindahl")}
ANALYSIS_WIDTHS = {"Account": 13, "Symbol": 16, "Measure": 17, "Value": 16, "Note": 42, "Group": 16, "By": 10,
                   "Date": 12, "SecType": 10, "Currency": 10, "NetLiquidation": 17, "MarketValue": 15,
                   "BetaDeltaDollars": 18, "BetaDeltaShares": 17, "AfterBasket": 14}
CORRELATION_REACH = 255          # holdings the matrix's colour scale and ratio format cover
CHART_ROWS = (4, 21, 23, 40)     # the charts: 2 x 2 right of the Summary (rows of each band); the Tables below
# (chart data Table, kind, title, value axis title): 2 x 2, left to right, then the row below
ANALYSIS_CHARTS = [
    ("ChartSecType", "bar", "Exposure by asset class (All)", "Base currency"),
    ("ChartCurrency", "bar", "Exposure by currency (All)", "Base currency"),
    ("ChartEquity", "line", "Equity curve (All)", "Net liquidation, base currency"),
    ("ChartVaR", "line", "One-day VaR history (All)", "Base currency"),
]


def _column_px(ws, col: int) -> int:
    width = ws.column_dimensions[get_column_letter(col)].width or 8.43
    return int(width * 7 + 5)


def _analysis(wb) -> None:
    """The Analysis sheet: a title and the VaR method note (named AnalysisNote), the Summary top-left, four
    native charts to its right, then the report's Tables side by side (layout.TABLES), the charts' data
    Tables and the correlation matrix, colour-scaled from -1 (blue) through 0 (white) to 1 (red).
    ``addin.app.analysis_sheet.write_analysis`` fills it; every chart plots whole body columns of one
    Table, so it follows that Table as it grows (the module docstring there says how)."""
    ws = wb.create_sheet("Analysis")
    ws.cell(row=1, column=1, value="Portfolio analysis: per account and All (every account together), "
            "amounts in the base currency").font = TITLE_FONT
    ws.cell(row=2, column=1, value=analysis_sheet.METHOD_NOTE).font = Font(italic=True, color="595959")
    _name(wb, analysis_sheet.NOTE_NAME, "Analysis", "$A$2")
    ws.freeze_panes = "A2"
    tables = [n for n, (sheet, *_rest) in layout.TABLES.items() if sheet == "Analysis"]
    for name in tables:
        _, top, left, columns = layout.TABLES[name]
        _add_table(ws, name, top, left, columns, widths=ANALYSIS_WIDTHS, formats=ANALYSIS_FORMATS)
        ws.cell(row=top - 1, column=left, value=_ANALYSIS_CAPTIONS.get(name, name)).font = Font(bold=True)
        if "Date" in columns:           # daily rows: a whole number shows as a date
            d = f"{get_column_letter(left + columns.index('Date'))}{top + 1}"
            _format_rule(ws, f"{d}:{d[0:-len(str(top + 1))]}{MAX_ROW}", f"AND(ISNUMBER({d}),{d}=INT({d}))",
                         layout.NUMBER_FORMATS["date"])
    for name, value_columns in (("Summary", ["Value"]), ("WhatIf", ["Now", "AfterBasket", "Change"])):
        measure = _col(name, "Measure")
        top = layout.TABLES[name][1]
        for fmt, measures in ANALYSIS_MEASURE_FORMATS.items():
            test = ",".join(f'${measure}{top + 1}="{m}"' for m in measures)
            for column in value_columns:
                v = _col(name, column)
                _format_rule(ws, f"{v}{top + 1}:{v}{MAX_ROW}", f"OR({test})", fmt)
    # gaps between the Tables: narrow
    used = {layout.TABLES[n][2] + j for n in tables for j in range(len(layout.TABLES[n][3]))}
    _, ctop, cleft, _ = layout.TABLES[layout.ANALYSIS_CORRELATION_NAME]
    for col in range(1, cleft):
        if col not in used:
            ws.column_dimensions[get_column_letter(col)].width = 3
    # the correlation matrix: every column a holding may take is a ratio, colour-scaled
    first, last = get_column_letter(cleft + 1), get_column_letter(cleft + CORRELATION_REACH)
    for col in range(cleft + 1, cleft + CORRELATION_REACH + 1):
        dim = ws.column_dimensions[get_column_letter(col)]
        dim.width, dim.number_format = 14, _RATIO
    ws.conditional_formatting.add(f"{first}{ctop + 1}:{last}{MAX_ROW}", ColorScaleRule(
        start_type="num", start_value=-1, start_color="5B9BD5", mid_type="num", mid_value=0, mid_color="FFFFFF",
        end_type="num", end_value=1, end_color="F8696B"))
    # the charts, 2 x 2 right of the Summary, above the Tables
    first_col = layout.TABLES["Exposure"][2]
    for i, (name, kind, title, axis_title) in enumerate(ANALYSIS_CHARTS):
        _, top, left, columns = layout.TABLES[name]
        chart = BarChart() if kind == "bar" else LineChart()
        if kind == "bar":
            chart.type, chart.grouping = "col", "clustered"
        chart.title = title
        chart.y_axis.title = axis_title
        chart.y_axis.number_format = "#,##0"
        chart.x_axis.delete = chart.y_axis.delete = False     # openpyxl 3.1 hides axes unless told
        if columns[0] == "Date":
            chart.x_axis.number_format = "d mmm yy"
        chart.add_data(Reference(ws, min_col=left + 1, max_col=left + len(columns) - 1, min_row=top, max_row=top + 1),
                       titles_from_data=True)
        chart.set_categories(Reference(ws, min_col=left, min_row=top + 1, max_row=top + 1))
        for series in chart.series:
            series.smooth = False                             # a curve between days would invent values
            if kind == "line":                                # the first day alone shows as a dot
                series.marker.symbol, series.marker.size = "circle", 3
        chart.legend.position = "b"
        if len(columns) == 2:
            chart.legend = None
        band_top, band_bottom = CHART_ROWS[2 * (i // 2)], CHART_ROWS[2 * (i // 2) + 1]
        chart.height, chart.width = (band_bottom - band_top + 1) * 0.53, 14.0
        col = first_col
        if i % 2:                       # the right-hand chart: past the left one's width
            px, want = 0, chart.width / 2.54 * 96 + 10
            while px < want:
                px += _column_px(ws, col)
                col += 1
        ws.add_chart(chart, f"{get_column_letter(col)}{band_top}")


_ANALYSIS_CAPTIONS = {
    "Summary": "Summary (Measure, Value; Note: method, window, as of)",
    "Exposure": "Exposure by secType, currency, exchange, industry",
    "Concentration": "Concentration: top positions by weight",
    "PositionPnL": "P&L by position (reqPnLSingle)",
    "PositionRisk": "Risk by position: daily volatility, beta to the benchmark",
    "WhatIf": "What-if: after the pending Orders rows",
    "PnLByDay": "P&L by day",
    "VaRHistory": "VaR history",
    "ChartSecType": "Chart data: by asset class (All)",
    "ChartCurrency": "Chart data: by currency (All)",
    "ChartEquity": "Chart data: equity (All)",
    "ChartVaR": "Chart data: VaR (All)",
    "Correlation": "Correlation of daily returns",
}


def _executions(wb) -> None:
    ws = wb.create_sheet("Executions")
    _add_table(ws, "Executions", 1, 1, layout.EXECUTIONS_COLUMNS,
               widths={"ExecId": 26, "Time": 20, "Symbol": 16, "OrderRef": 22, "Account": 13})
    ws.freeze_panes = "A2"


def _audit(wb) -> None:
    """The orders' audit trail (macro refresh_audit, ``ibxl run --orders``): newest first, Time local."""
    ws = wb.create_sheet("Audit")
    _add_table(ws, "Audit", 1, 1, layout.AUDIT_COLUMNS,
               widths={"Time": 20, "Ref": 22, "Event": 14, "Symbol": 16, "Status": 14, "Detail": 80})
    status = _col("Audit", "Status")
    for text, colour in layout.STATUS_COLOURS.items():
        ws.conditional_formatting.add(
            f"{status}2:{status}{MAX_ROW}",
            FormulaRule(formula=[f'${status}2="{text}"'], fill=PatternFill("solid", bgColor=colour), stopIfTrue=True),
        )
    ws.freeze_panes = "A2"


def _log(wb) -> None:
    ws = wb.create_sheet("Log")
    _add_table(ws, "LogEntries", 1, 1, layout.LOG_COLUMNS, widths={"Time": 20, "Source": 20, "Message": 100})
    ws.freeze_panes = "A2"


def vba_sub(macro: str) -> str:
    """The VBA Sub name a button calls for ``macro`` (``place_orders`` -> ``IbxlPlaceOrders``)."""
    return "Ibxl" + "".join(part.capitalize() for part in macro.split("_"))


def python_call(macro: str) -> str:
    """The Python a button or VBA Sub runs for ``macro`` (a function of addin.app.macros)."""
    return f"import addin.app.macros as m; m.{macro}()"


def run_python(macro: str) -> str:
    """The VBA statement that runs ``macro``: ``RunPython "import addin.app.macros as m; m.macro()"``."""
    return f'RunPython "{python_call(macro)}"'


def macros_bas() -> str:
    """The VBA module (workbooks/ibxl_macros.bas) with one Sub per macro."""
    lines = ['Attribute VB_Name = "ibxl"', "' ibxl macros: generated by workbooks/build.py, do not edit.",
             "' Each Sub runs one function of addin.app.macros through xlwings' RunPython.", ""]
    for macro, caption in layout.MACROS:
        lines += [f"Sub {vba_sub(macro)}()", f"    ' {caption}", f"    {run_python(macro)}", "End Sub", ""]
    return "\r\n".join(lines)


BUTTON_ROW_HEIGHT = 24      # points: a form button 26 px high with a margin
BUTTON_COLUMN_WIDTH = 28    # characters: 201 px, the button 194 px wide


def _buttons(wb) -> None:
    """The Buttons sheet: one form button per macro (column A), bound to xlwings' RunPython with the
    macro's Python call (workbooks/buttons.py), next to what it does and the optional VBA Sub."""
    ws = wb.create_sheet("Buttons")
    ws.cell(row=1, column=1, value="Buttons: each runs one ibxl macro through xlwings (RunPython). "
            "Set-up: workbooks/README.md.").font = TITLE_FONT
    header = ["Button", "VBA Sub (optional: ibxl_macros.bas)", "Button macro (Assign Macro text)"]
    for j, h in enumerate(header, start=1):
        c = ws.cell(row=3, column=j, value=h)
        c.font, c.fill = HEADER_FONT, HEADER_FILL
    placed = []
    for i, (macro, caption) in enumerate(layout.MACROS, start=4):
        ws.cell(row=i, column=2, value=vba_sub(macro))
        ws.cell(row=i, column=3, value=buttons.macro_text(python_call(macro)))
        ws.row_dimensions[i].height = BUTTON_ROW_HEIGHT
        for j in (2, 3):
            ws.cell(row=i, column=j).alignment = Alignment(vertical="center")
        placed.append(buttons.Button(caption, buttons.macro_text(python_call(macro)), row=i - 1, col=0))
    ws.column_dimensions["A"].width = BUTTON_COLUMN_WIDTH
    ws.column_dimensions["B"].width = 34
    ws.column_dimensions["C"].width = 72
    col_px = [BUTTON_COLUMN_WIDTH * 7 + 5]
    row_px = [20] * 3 + [round(BUTTON_ROW_HEIGHT / 0.75)] * len(placed)
    buttons.attach(wb, ws, buttons.button_vml(placed, col_px, row_px))


def _xlwings_conf(wb) -> None:
    """Activate the quickstart's settings sheet: UDFs from the ``udfs`` package, one UDF server process
    (it keeps the IB session alive between calls)."""
    ws = wb["_xlwings.conf"]
    ws.title = "xlwings.conf"
    settings = {"UDF Modules": "udfs", "Use UDF Server": True}
    for row in ws.iter_rows(min_row=1, max_row=12, max_col=2):
        key = row[0].value
        if key in settings:
            row[1].value = settings[key]


# -------------------------------------------------------------------------------------------------
# build
# -------------------------------------------------------------------------------------------------

def _quickstart_xlsm() -> Path:
    import xlwings

    path = Path(xlwings.__file__).resolve().parent / "quickstart_standalone.xlsm"
    if not path.exists():
        raise FileNotFoundError(f"xlwings' macro-enabled template is not at {path}; reinstall xlwings")
    return path


def build_workbook(macro: bool) -> openpyxl.Workbook:
    """The template as an openpyxl Workbook (macro-enabled when ``macro``)."""
    if macro:
        wb = openpyxl.load_workbook(io.BytesIO(_quickstart_xlsm().read_bytes()), keep_vba=True)
        wb.remove(wb["Sheet1"])
    else:
        wb = openpyxl.Workbook()
        wb.remove(wb.active)
    for make in (_config, _watchlist, _history, _options, _orders, _portfolio, _analysis, _executions, _audit,
                 _log):
        make(wb)
    if macro:
        _buttons(wb)
        _xlwings_conf(wb)
        wb.move_sheet("xlwings.conf", offset=len(wb.sheetnames) - 1 - wb.sheetnames.index("xlwings.conf"))
    wb.active = wb.sheetnames.index("Watchlist")
    for ws in wb.worksheets:
        ws.sheet_view.tabSelected = ws.title == "Watchlist"
    wb.properties.creator = "ibxl (workbooks/build.py)"
    wb.properties.title = "ibxl"
    wb.properties.created = FIXED_TIME
    wb.properties.modified = FIXED_TIME
    return wb


def _sorted_defaults(content_types: bytes) -> bytes:
    """``[Content_Types].xml`` with its ``<Default>`` entries in sorted order, each in the place of one."""
    defaults = iter(sorted(re.findall(rb"<Default [^>]*/>", content_types)))
    return re.sub(rb"<Default [^>]*/>", lambda _m: next(defaults), content_types)


def _normalize(data: bytes) -> bytes:
    """Fixed zip timestamps, document dates and member order, so the same input builds the same bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        # sorted: openpyxl adds the parts it keeps from the VBA template in set order, which varies by process
        for info in sorted(src.infolist(), key=lambda i: (i.filename != "[Content_Types].xml", i.filename)):
            body = src.read(info.filename)
            if info.filename == "[Content_Types].xml":     # its Default entries come in set order too
                body = _sorted_defaults(body)
            if info.filename == "docProps/core.xml":
                stamp = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
                body = re.sub(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)",
                              rb"\g<1>" + stamp + rb"\g<2>", body)
            zi = zipfile.ZipInfo(info.filename, date_time=FIXED_TIME.timetuple()[:6])
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, body)
    return out.getvalue()


def build(out_dir: str | Path = HERE) -> list[Path]:
    """Write ibxl.xlsx, ibxl.xlsm and ibxl_macros.bas into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, macro in (("ibxl.xlsx", False), ("ibxl.xlsm", True)):
        buf = io.BytesIO()
        build_workbook(macro).save(buf)
        path = out_dir / name
        path.write_bytes(_normalize(buf.getvalue()))
        written.append(path)
    bas = out_dir / "ibxl_macros.bas"
    bas.write_bytes(macros_bas().encode("ascii"))
    written.append(bas)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the ibxl template workbooks.")
    parser.add_argument("--out", default=str(HERE), help="folder to write into (default: workbooks/)")
    args = parser.parse_args(argv)
    for path in build(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
