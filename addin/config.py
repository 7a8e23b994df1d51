"""Settings: the user's own config file, and a workbook's Config sheet that may only tighten it.

Where the file is (one rule on every OS): ``$IBXL_CONFIG`` when set, else ``~/.ibxl/config.toml``
(``~`` is ``%USERPROFILE%`` on Windows). The order journal defaults to ``journal.sqlite3`` beside it
(:func:`journal_path`, ``$IBXL_JOURNAL`` overrides). A missing file means the defaults below; a file that is not
valid TOML, an unknown key or a value of the wrong type raises :class:`ConfigError` naming the key.

Keys (TOML; the defaults are safe for a new user: paper accounts only, small orders)::

    [connection]
    host = "127.0.0.1"            TWS / IB Gateway host
    port = 4002                   IB Gateway paper (TWS paper 7497, live 7496, Gateway live 4001)
    client_id = 1                 IB API client id
    market_data_type = "live"     live | frozen | delayed | delayed-frozen

    [risk]
    read_only = false             true: every order is refused ("read_only")
    allow_live = false            orders to accounts not starting with "D" (live) need true; user file only
    allow_short = false           selling more than the position (counting open sells) needs true
    max_quantity = 100.0          per order, in shares / contracts / base-currency units / coins
    max_notional = 25000.0        per order, quantity x price x multiplier, in base_currency
    base_currency = "USD"         the account's base currency (notional is converted into it)
    price_band_pct = 5.0          limit and stop prices within this % of the current mid (else last)
    quote_max_age = 10.0          seconds: a market order needs a quote at least this fresh
    max_position = 500.0          per instrument and account, |position + open orders + this order|
    max_open_orders = 20          working orders of the account(s) at IB, this order included
    max_orders_per_minute = 10    orders transmitted by this journal in the last 60 s
    allowed_sec_types = ["STK", "CASH", "FUT", "CRYPTO"]
    symbol_allow = []             IB symbols allowed (empty: any)
    symbol_deny = []              IB symbols always refused
    daily_loss_limit = 2000.0     base currency: no new orders once today's P&L <= -limit (reqPnL)
    round_to_tick = false         true: prices off the tick grid are rounded (else refused)
    whatif_margin_check = false   true: a whatIf order first; refused if its margin exceeds AvailableFunds
    ack_timeout = 5.0             seconds place() waits for IB to acknowledge the orders it sent

Tightening (:meth:`Settings.tighten`): a workbook's Config sheet arrives as a plain dict (key ->
cell value; keys case-insensitive, spaces and dashes read as underscores). Only ``[risk]`` keys may
appear. A value is taken only when it is at least as strict: a lower ``max_*``, ``daily_loss_limit``,
``price_band_pct`` or ``quote_max_age``; ``allowed_sec_types`` / ``symbol_allow`` narrowed (the
intersection is kept, extra entries are ignored with a warning); ``symbol_deny`` extended;
``allow_short`` and ``round_to_tick`` only True -> False; ``read_only`` and ``whatif_margin_check``
only False -> True. ``allow_live``, connection keys and ``base_currency`` are never taken from a
workbook. Everything ignored gives a warning naming the key.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

__all__ = ["ConfigError", "ConnectionSettings", "RiskSettings", "Settings", "config_path", "journal_path",
           "load_settings", "settings_from_dict"]

MARKET_DATA_TYPES = ("live", "frozen", "delayed", "delayed-frozen")


class ConfigError(ValueError):
    """The user's config file is unreadable or holds a bad key or value (the message names it)."""


@dataclass(frozen=True)
class ConnectionSettings:
    host: str = "127.0.0.1"
    port: int = 4002
    client_id: int = 1
    market_data_type: str = "live"


@dataclass(frozen=True)
class RiskSettings:
    """Every pre-trade limit (units in the module docstring)."""

    read_only: bool = False
    allow_live: bool = False
    allow_short: bool = False
    max_quantity: float = 100.0
    max_notional: float = 25_000.0
    base_currency: str = "USD"
    price_band_pct: float = 5.0
    quote_max_age: float = 10.0
    max_position: float = 500.0
    max_open_orders: int = 20
    max_orders_per_minute: int = 10
    allowed_sec_types: tuple[str, ...] = ("STK", "CASH", "FUT", "CRYPTO")
    symbol_allow: tuple[str, ...] = ()
    symbol_deny: tuple[str, ...] = ()
    daily_loss_limit: float = 2_000.0
    round_to_tick: bool = False
    whatif_margin_check: bool = False
    ack_timeout: float = 5.0


@dataclass(frozen=True)
class Settings:
    connection: ConnectionSettings = field(default_factory=ConnectionSettings)
    risk: RiskSettings = field(default_factory=RiskSettings)
    source: str = ""              # the file read ("" for defaults)

    def tighten(self, workbook_config: Mapping[str, Any]) -> tuple["Settings", list[str]]:
        """The settings with a workbook Config sheet's stricter values applied, and a warning for
        every key ignored (loosening, allow_live, connection keys, unknown keys, bad values).
        Never raises for workbook content: a bad cell is a warning."""
        risk = self.risk
        warnings: list[str] = []
        for raw_key, value in (workbook_config or {}).items():
            key = _norm_key(raw_key)
            if not key:
                continue
            try:
                risk = _tighten_one(risk, key, value, warnings)
            except (TypeError, ValueError) as exc:
                warnings.append(f"{key}: ignored, {exc}")
        return replace(self, risk=risk), warnings


_NUMERIC_MAX = {"max_quantity", "max_notional", "price_band_pct", "quote_max_age", "max_position",
                "max_open_orders", "max_orders_per_minute", "daily_loss_limit", "ack_timeout"}
_ONLY_OFF = {"allow_short", "round_to_tick"}          # True -> False tightens
_ONLY_ON = {"read_only", "whatif_margin_check"}       # False -> True tightens
_NARROW = {"allowed_sec_types", "symbol_allow"}
_NEVER = {"allow_live", "base_currency", "host", "port", "client_id", "market_data_type"}


def _norm_key(key: Any) -> str:
    return "_".join(str(key or "").strip().lower().replace("-", " ").split())


def _tighten_one(risk: RiskSettings, key: str, value: Any, warnings: list[str]) -> RiskSettings:
    if key in _NEVER:
        warnings.append(f"{key}: ignored, a workbook cannot set it (only the user's config file can)")
        return risk
    current = getattr(risk, key, None) if key in {f.name for f in fields(RiskSettings)} else None
    if current is None:
        warnings.append(f"{key}: ignored, not a risk setting")
        return risk
    if key in _NUMERIC_MAX:
        new = _number(value, key)
        if new < 0:
            raise ValueError(f"expected a number >= 0, got {value!r}")
        if key == "ack_timeout":          # not a limit: any positive value, capped by the user's
            new = min(new, current)
        if new > current:
            warnings.append(f"{key}: ignored, {_fmt(new)} would loosen the limit {_fmt(current)}")
            return risk
        whole = isinstance(getattr(RiskSettings(), key), int)       # counts stay ints, amounts floats
        if whole and not float(new).is_integer():
            raise ValueError(f"expected a whole number, got {value!r}")
        return replace(risk, **{key: int(new) if whole else float(new)})
    if key in _ONLY_OFF or key in _ONLY_ON:
        new = _boolean(value, key)
        loosens = (key in _ONLY_OFF and new and not current) or (key in _ONLY_ON and not new and current)
        if loosens:
            warnings.append(f"{key}: ignored, {new} would loosen the user's setting {current}")
            return risk
        return replace(risk, **{key: new})
    items = _text_list(value)
    if key in _NARROW:
        if key == "symbol_allow" and not current:       # empty = any: every list is narrower
            return replace(risk, **{key: items})
        extra = [x for x in items if x not in current]
        if extra:
            warnings.append(f"{key}: ignored {', '.join(extra)}, not allowed by the user's config")
        return replace(risk, **{key: tuple(x for x in items if x in current)})
    if key == "symbol_deny":
        return replace(risk, symbol_deny=tuple(dict.fromkeys(current + items)))
    warnings.append(f"{key}: ignored, not a risk setting")      # pragma: no cover - all keys above
    return risk


def _fmt(x: float) -> str:
    return f"{x:,.10g}"


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, str):
        value = value.strip().replace(",", "")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"expected a finite number, got {value!r}")
    return x


def _boolean(value: Any, key: str) -> bool:
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "y", "1", "on"):
        return True
    if text in ("false", "no", "n", "0", "off"):
        return False
    raise ValueError(f"expected TRUE or FALSE, got {value!r}")


def _text_list(value: Any) -> tuple[str, ...]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ()
    if isinstance(value, (list, tuple)):
        parts = [str(v) for v in value]
    else:
        parts = str(value).replace(";", ",").split(",")
    return tuple(dict.fromkeys(p.strip().upper() for p in parts if p.strip()))


# --- the user's file ----------------------------------------------------------------------------------
def config_path() -> Path:
    """``$IBXL_CONFIG`` if set, else ``~/.ibxl/config.toml``."""
    env = os.environ.get("IBXL_CONFIG", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".ibxl" / "config.toml"


def journal_path() -> Path:
    """Where the order journal lives by default: ``$IBXL_JOURNAL`` when set, else ``journal.sqlite3``
    next to the config file (``~/.ibxl/journal.sqlite3``)."""
    env = os.environ.get("IBXL_JOURNAL", "").strip()
    return Path(env).expanduser() if env else config_path().parent / "journal.sqlite3"


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Read the user's config file (``path``, else :func:`config_path`); defaults when it does not
    exist. Raises ConfigError for bad TOML, unknown sections or keys, or values of the wrong type."""
    p = Path(path) if path is not None else config_path()
    if not p.exists():
        return Settings()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the config file: {exc}") from exc
    return settings_from_dict(data, source=str(p))


def settings_from_dict(data: Mapping[str, Any], source: str = "") -> Settings:
    """Settings from the parsed TOML (``{"connection": {...}, "risk": {...}}``). Raises ConfigError."""
    unknown = set(data) - {"connection", "risk"}
    if unknown:
        raise ConfigError(f"{source or 'config'}: unknown section(s) {', '.join(sorted(unknown))}; "
                          f"expected [connection] and [risk]")
    conn = _section(ConnectionSettings, data.get("connection", {}), "connection", source)
    risk = _section(RiskSettings, data.get("risk", {}), "risk", source)
    if conn.market_data_type not in MARKET_DATA_TYPES:
        raise ConfigError(f"{source or 'config'}: connection.market_data_type: expected one of "
                          f"{', '.join(MARKET_DATA_TYPES)}, got {conn.market_data_type!r}")
    return Settings(conn, risk, source)


def _section(cls, values: Mapping[str, Any], name: str, source: str):
    where = source or "config"
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: [{name}] must be a table")
    defaults = cls()
    known = {f.name: getattr(defaults, f.name) for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: {name}.{key}: unknown key; known keys: {', '.join(known)}")
        default = known[key]
        try:
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"expected true or false, got {value!r}")
                out[key] = value
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"expected a whole number, got {value!r}")
                out[key] = value
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                        or value < 0:
                    raise ValueError(f"expected a number >= 0, got {value!r}")
                out[key] = float(value)
            elif isinstance(default, tuple):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"expected a list of strings, got {value!r}")
                out[key] = _text_list(value)
            else:
                if not isinstance(value, str):
                    raise ValueError(f"expected a string, got {value!r}")
                out[key] = value.strip().upper() if key == "base_currency" else value.strip()
        except ValueError as exc:
            raise ConfigError(f"{where}: {name}.{key}: {exc}") from None
    return cls(**out)
