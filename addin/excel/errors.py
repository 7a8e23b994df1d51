"""Errors as cell text: what a UDF returns and what the pump writes into a Status cell.

IB's errors read ``#IB <code>: <IB's text>`` (e.g. ``#IB 200: No security definition has been found
for the request: ZZZZ``); our own read ``#IBXL: <what was wrong>``. Never a Python traceback: the
traceback goes to the log.
"""

from __future__ import annotations

import logging

from ..ib.contracts import InstrumentError
from ..ib.session import IBError

log = logging.getLogger(__name__)

__all__ = ["error_text", "ExcelInputError"]


class ExcelInputError(ValueError):
    """Bad input in a cell or argument; the message names the cell or argument and what was expected."""


def error_text(exc: BaseException) -> str:
    """The cell text for ``exc``: ``#IB <code>: <text>`` for IB's errors (IBError, an
    InstrumentError IB refused with a code), ``#IBXL: <message>`` for everything else. An exception
    with a ``cell_text()`` method (the service's errors, a user's disconnect) says its own text."""
    cell_text = getattr(exc, "cell_text", None)
    if callable(cell_text):
        return cell_text()
    if isinstance(exc, InstrumentError):
        if exc.code:
            return f"#IB {exc.code}: {exc.ib_text or 'refused'}: {exc.text} (understood {exc.understood})"
        return f"#IBXL: {exc}"
    if isinstance(exc, IBError):
        text = f"#IB {exc.code}: {exc.text}"
        return text + (f" ({exc.request})" if exc.request else "")
    if isinstance(exc, (ValueError, KeyError, TypeError, LookupError)):
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        return f"#IBXL: {msg}"
    log.error("unexpected error", exc_info=exc)
    return f"#IBXL: internal error ({type(exc).__name__}: {exc}); see the ibxl log"
