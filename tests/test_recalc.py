"""addin.excel.recalc: the caller-cell registry (register, replace, changed, prune) and the Runtime's
per-cell market data lines (a re-evaluated formula does not pile up subscriptions; a pruned one
releases its line), against the paper gateway through the real ibapi client."""

from __future__ import annotations

import pytest

from addin.app.runtime import Runtime
from addin.excel.openpyxl_book import OpenpyxlBook
from addin.excel.recalc import RecalcRegistry, normalize_address
from addin.paper import PaperGateway
from benchmarks.sinks import CountingBook


def test_normalize_address():
    assert normalize_address("$B$3") == "B3"
    assert normalize_address("$B$3:$D$9") == "B3"        # a dynamic array registers its anchor
    assert normalize_address("Sheet1!c12") == "C12"
    with pytest.raises(ValueError):
        normalize_address("not a cell")


def test_register_replace_and_changed():
    released = []
    reg = RecalcRegistry(on_release=lambda cell, keys: released.append((cell, keys)))
    assert reg.register("Sheet1", "$A$1", ["AAPL", "MSFT"]) == ({"AAPL", "MSFT"}, set())
    reg.register("Sheet1", "A2", ["AAPL"])
    reg.register("Sheet2", "B5", ["SPY"], book="C:\\x\\other.xlsx")
    assert reg.changed(["AAPL"]) == {"Sheet1": ["A1", "A2"]}
    assert reg.changed(["SPY", "MSFT"]) == {"Sheet1": ["A1"], "Sheet2": ["B5"]}
    assert reg.changed(["SPY"], book="C:\\y\\mine.xlsx") == {}       # another workbook's cell
    # the formula in A1 now shows SPY only: MSFT and AAPL are released for that cell
    assert reg.register("Sheet1", "A1", ["SPY"]) == ({"SPY"}, {"AAPL", "MSFT"})
    assert released == [((None, "Sheet1", "A1"), {"AAPL", "MSFT"})]
    assert reg.changed(["MSFT"]) == {}
    assert reg.changed(["AAPL"]) == {"Sheet1": ["A2"]}
    assert reg.unregister("Sheet1", "A2") == {"AAPL"}
    assert reg.changed(["AAPL"]) == {} and len(reg) == 2


def test_changed_sorts_by_row_then_column():
    reg = RecalcRegistry()
    for a in ["B10", "A2", "AA2", "B9"]:
        reg.register("S", a, ["K"])
    assert reg.changed(["K"]) == {"S": ["A2", "AA2", "B9", "B10"]}


def test_prune_drops_cells_whose_formula_no_longer_calls_us_one_read_per_sheet():
    book = CountingBook({"Sheet1": [], "Sheet2": []})
    reg = RecalcRegistry()
    for sheet, addr, formula in [("Sheet1", "A1", '=IB_QUOTE("AAPL")'), ("Sheet1", "A2", "=1+1"),
                                 ("Sheet1", "A3", None), ("Sheet2", "C3", "=_xldudf_IB_QUOTES(A1:A3,\"bid\")"),
                                 ("Gone", "A1", '=IB_QUOTE("X")')]:
        reg.register(sheet, addr, ["AAPL"])
        if sheet != "Gone":
            book.set_formula(sheet, addr, formula)
    dead = reg.prune(book)
    assert sorted(dead) == [(None, "Gone", "A1"), (None, "Sheet1", "A2"), (None, "Sheet1", "A3")]
    assert sorted(reg.cells()) == [(None, "Sheet1", "A1"), (None, "Sheet2", "C3")]
    assert book.counts["formulas"] == 3      # Sheet1, Sheet2 and the missing sheet: one read each


def test_prune_reads_formulas_from_an_openpyxl_workbook(tmp_path):
    book = OpenpyxlBook.new()
    book.add_sheet("Quotes")
    book.write_formulas("Quotes", 1, 1, [['=IB_QUOTE("AAPL")', "=SUM(1,2)", 5]])
    reg = RecalcRegistry()
    for a in ("A1", "B1", "C1"):
        reg.register("Quotes", a, ["AAPL.NASDAQ"])
    reg.prune(book)
    assert reg.cells() == [(None, "Quotes", "A1")]


def test_runtime_cells_hold_one_line_each_and_release_it():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=5.0) as gw, \
            Runtime(port=gw.port, client_id=43) as rt:
        rt.connect()
        cell = (None, "Sheet1", "$B$2")
        for _ in range(5):                   # Excel recalculates the same formula again and again
            assert rt.hold_quotes(["AAPL"], cell) == ["AAPL.NASDAQ"]
        assert rt.market.subscriptions() == {"AAPL.NASDAQ": 1}
        rt.hold_quotes(["MSFT", "AAPL"], (None, "Sheet1", "B3"))
        assert rt.market.subscriptions() == {"AAPL.NASDAQ": 2, "MSFT.NASDAQ": 1}
        # B2 now shows MSFT: its AAPL user goes, MSFT gains one
        rt.hold_quotes(["MSFT"], cell)
        assert rt.market.subscriptions() == {"AAPL.NASDAQ": 1, "MSFT.NASDAQ": 2}
        # B3's formula was deleted: pruning releases both of its lines
        book = CountingBook({"Sheet1": []})
        book.set_formula("Sheet1", "B2", '=IB_QUOTE("MSFT")')
        rt.registry.prune(book)
        assert rt.market.subscriptions() == {"MSFT.NASDAQ": 1}
        assert rt.registry.changed(["MSFT.NASDAQ"]) == {"Sheet1": ["B2"]}
