"""Portfolio analysis (issue 18): exposure, concentration, per-position P&L, risk from daily history,
what-if of a basket, and the recorded P&L / VaR history.

Pure computation on pandas frames (plus two small SQLite stores): this package imports only
``addin.protocol``, pandas and numpy. ``addin.app.analysis_data`` gathers the frames from IB (positions,
account values, P&L, contract details, daily bars) and calls :func:`addin.analysis.report.build_report`,
whose result is ``{Table name: DataFrame}`` with exactly the columns of
``addin.excel.layout.ANALYSIS_COLUMNS`` (the Correlation Table: "Symbol" then one column per holding).
"""
