"""The paper gateway: an offline TWS API server (server version 178) that replays real market data
and fills orders. ``PaperGateway`` runs it in-process, ``PaperProcess`` as a child process."""

from .gateway import PaperGateway, PaperProcess, check_bind, is_loopback
from .server import GatewayConfig

__all__ = ["PaperGateway", "PaperProcess", "GatewayConfig", "check_bind", "is_loopback"]
