"""Worksheet functions for Excel (xlwings "UDF Modules" = ``udfs``): read-only views of IB.

See :mod:`udfs.functions` and :mod:`udfs.options` (IB_CHAIN, IB_EXPIRIES, IB_STRIKES). No function here can
place, modify or cancel an order.
"""

from .analysis import IB_CORRELATION, IB_EXPOSURE, IB_PNL_BY_POSITION, IB_RISK
from .functions import (
                        IB_ACCOUNT,
                        IB_CONTRACT,
                        IB_HISTORY,
                        IB_ORDER,
                        IB_PNL,
                        IB_POSITIONS,
                        IB_QUOTE,
                        IB_QUOTES,
                        IB_STATUS,
)
from .options import IB_CHAIN, IB_EXPIRIES, IB_STRIKES

__all__ = ["IB_QUOTE", "IB_QUOTES", "IB_HISTORY", "IB_CONTRACT", "IB_POSITIONS", "IB_ACCOUNT", "IB_PNL",
           "IB_ORDER", "IB_STATUS", "IB_EXPOSURE", "IB_RISK", "IB_PNL_BY_POSITION", "IB_CORRELATION", "IB_CHAIN",
           "IB_EXPIRIES", "IB_STRIKES"]
