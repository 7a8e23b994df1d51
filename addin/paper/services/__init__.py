"""The paper gateway's per-concern services, run on the server's event loop: the client connection
(handshake, framing, rate limit), market data (quotes, tick-by-tick, the streaming loop), historical
data (validation, pacing, keepUpToDate), orders (:class:`~.order_desk.PaperOrderService`), accounts
(:class:`~.account_desk.PaperAccountService`) and the firehose used by the benchmarks. Each decodes
its requests with :mod:`addin.paper.codec` and answers from :mod:`addin.paper.market`.

No service knows the server: each is given what it uses (the market, the broker, the resolve-contract
function, settings) and a callback for the few calls that cross services; errors go out through the
connection's own ``send_error``. ``addin.paper.server`` builds and wires them.
"""
