"""TWS wire knowledge shared by the client packages and the paper gateway, depending only on ibapi
and the standard library. Both sides import from here and never from each other (tests/test_layout.py).
So far: the futures month codes (``futures``); framing, unset values, message ids, error-code sets and
IB's historical rules are to follow (see README's Layout)."""
