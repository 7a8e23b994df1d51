"""The ibxl service: one process per OS user owns the Runtime (the IB connection, market data lines,
history pacing, portfolio, order desk and journal); workbooks, ``ibxl run``, the RTD server and
scripts are its clients over a local, authenticated socket.

Modules: ``protocol`` (the versioned message schema), ``paths`` (socket and key file in the user's
ibxl folder), ``transport`` (listener and connection over AF_UNIX), ``server`` (ServiceServer),
``client`` (ServiceClient, TradingClient), ``cli`` (``ibxl service start|stop|status``), ``__main__``
(the service process).
"""
