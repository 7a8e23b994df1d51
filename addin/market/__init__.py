"""Market data from IB: streaming quotes (shared reqMktData lines and the QuoteBoard the Excel pump
reads) and historical bars as pandas DataFrames, with IB's pacing kept and long ranges stitched.
"""
