"""The paper gateway's simulated world, as plain Python objects with no sockets: the replayed market
(instruments, real price series in ``data/``, the tick generator, quotes and bars), IB's rules for
historical requests, and the broker (order engine, accounts, commissions) that fills orders against it.
"""
