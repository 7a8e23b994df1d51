"""Order entry from sheet rows: rows parsed into intents (:mod:`.rows`), pre-trade risk rules
(:mod:`.risk`) over facts from standing feeds (:mod:`.facts`), the SQLite journal that makes "never
sent twice" hold (:mod:`.journal`), IB's order events and the reconcile (:mod:`.sync`), and the
:class:`~addin.orders.desk.OrderDesk` that ties them together and is the only place that transmits
orders (:mod:`.desk`).
"""
