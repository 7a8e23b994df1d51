"""The connection to Interactive Brokers: the background session (one ibapi EClient/EWrapper per
process, reconnects, request ids, pacing), the fast socket reader and decoders for the hot inbound
messages, and contracts (the cell grammar for instruments and the qualification cache). Everything
else in the add-in talks to IB through :mod:`addin.ib.session`.
"""
