"""TWS wire knowledge shared by the client packages and the paper gateway, depending only on ibapi
and the standard library. Both sides import from here and never from each other (tests/test_layout.py).

- ``framing``: the ``API\\0`` handshake and version range, length-prefixed frames (``Framer``),
  splitting fields and message ids (ibapi's ``comm`` where it fits);
- ``unset``: IB's unset values (ibapi's ``UNSET_*``), their wire texts and ``is_unset``;
- ``messages``: message ids by name, ``IN`` (TWS -> client) and ``OUT`` (client -> TWS), ibapi's;
- ``errors``: IB's error codes named by meaning, and the sets handled alike (connectivity, warnings,
  retryable market data errors, ...);
- ``ticks``: tick types by quote field (ibapi's ``TickTypeEnum``) and the market data types
  (1 live, 2 frozen, 3 delayed, 4 delayed-frozen);
- ``historical``: IB's historical-data rules (bar sizes, durations with one time semantics, the
  step table, whatToShow, pacing limits);
- ``times``: IB's date/time texts, read and written, and IB's time zone names;
- ``futures``: the futures month codes;
- ``orders``: the order vocabulary the Orders sheet offers (order types, TIFs, which price columns
  each needs), read by the row parser, the template's drop-downs, the README and the paper broker."""
