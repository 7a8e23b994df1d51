"""The paper gateway: an offline TWS API server that replays real market data and fills orders."""
