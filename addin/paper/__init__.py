"""The paper gateway: an offline TWS API server (server version 178) that replays real market data
and fills orders. ``PaperGateway`` runs it in-process, ``PaperProcess`` as a child process.

The names below load on first use (PEP 562), so importing ``addin.paper.cli`` for the command line
does not load the market model."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["PaperGateway", "PaperProcess", "GatewayConfig", "check_bind", "is_loopback"]
_WHERE = {"PaperGateway": ".gateway", "PaperProcess": ".gateway", "check_bind": ".gateway",
          "is_loopback": ".gateway", "GatewayConfig": ".server"}

if TYPE_CHECKING:
    from .gateway import PaperGateway, PaperProcess, check_bind, is_loopback
    from .server import GatewayConfig


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
