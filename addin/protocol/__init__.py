"""TWS wire knowledge shared by the client packages and the paper gateway, depending only on ibapi
and the standard library. Both sides import from here and never from each other (tests/test_layout.py).
So far: the futures month codes (``futures``), IB's historical-data rules (``historical``) and IB's
date/time texts (``times``); framing, unset values, message ids and error-code sets are to follow
(see README's Layout)."""
