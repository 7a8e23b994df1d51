"""Settings: the user's own config file, and a workbook's Config sheet that may only tighten it.

Where the file is (one rule on every OS): ``$IBXL_CONFIG`` when set, else ``~/.ibxl/config.toml``
(``~`` is ``%USERPROFILE%`` on Windows). The order journal defaults to ``journal.sqlite3`` beside it
(:func:`journal_path`, ``$IBXL_JOURNAL`` overrides). A missing file means the defaults below; a file that is not
valid TOML, an unknown key or a value of the wrong type raises :class:`ConfigError` naming the key. The
settings are frozen pydantic dataclasses (:class:`ConnectionSettings`, :class:`RiskSettings`,
:class:`Settings`): the types and bounds below are their schema, checked strictly (a TOML string is not a
number, ``1`` is not ``true``).

Keys (TOML; the defaults are safe for a new user: paper accounts only, small orders)::

    [connection]
    host = "127.0.0.1"            TWS / IB Gateway host
    port = 4002                   IB Gateway paper (TWS paper 7497, live 7496, Gateway live 4001)
    client_id = 1                 IB API client id
    market_data_type = "live"     live | frozen | delayed | delayed-frozen
    service = true                true: workbooks (their formulas and buttons) share one IB connection
                                  through the user's ibxl service, started on first use; false: each
                                  process connects on its own ($IBXL_SERVICE=0/1 overrides)

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

    [analysis]
    benchmark = "SPY"             the Analysis sheet's beta and beta-weighted delta are to this instrument
    window_days = 252             daily returns the volatility, beta, correlation, VaR and ES use

Tightening (:meth:`Settings.tighten`): a workbook's Config sheet arrives as a plain dict (key ->
cell value; keys case-insensitive, spaces and dashes read as underscores). Only ``[risk]`` keys may
appear. A value is taken only when it is at least as strict: a lower ``max_*``, ``daily_loss_limit``,
``price_band_pct`` or ``quote_max_age``; ``allowed_sec_types`` / ``symbol_allow`` narrowed (the
intersection is kept, extra entries are ignored with a warning); ``symbol_deny`` extended;
``allow_short`` and ``round_to_tick`` only True -> False; ``read_only`` and ``whatif_margin_check``
only False -> True. ``allow_live``, connection keys and ``base_currency`` are never taken from a
workbook. Everything ignored gives a warning naming the key. Cell values are read by :mod:`addin.cells`'
rules (numbers finite, booleans TRUE/FALSE, YES/NO or 1/0, lists ``"A, B; C"``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import field, fields, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationError, field_validator
from pydantic.dataclasses import dataclass

from .cells import CellError, boolean, number, text_list
from .protocol.ticks import MARKET_DATA_TYPE_CODES

__all__ = ["AnalysisSettings", "ConfigError", "ConnectionSettings", "RiskSettings", "Settings", "config_path",
           "journal_path", "load_settings", "settings_from_dict"]


# Strict: a TOML value must already have the key's type (no "5" for 5, no 1 for true); unknown keys refused.
_SCHEMA = ConfigDict(strict=True, extra="forbid")
# An amount or limit: a finite number >= 0 (a TOML integer is taken as a float).
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ConfigError(ValueError):
    """The user's config file is unreadable or holds a bad key or value (the message names it)."""


@dataclass(frozen=True, config=_SCHEMA)
class ConnectionSettings:
    """``[connection]``: where TWS / IB Gateway listens and how ibxl talks to it (module docstring)."""

    host: str = "127.0.0.1"
    port: int = 4002
    client_id: int = 1
    market_data_type: str = "live"
    service: bool = True

    @field_validator("host", "market_data_type")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("market_data_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in MARKET_DATA_TYPE_CODES:
            raise ValueError(f"expected one of {', '.join(MARKET_DATA_TYPE_CODES)}, got {value!r}")
        return value


@dataclass(frozen=True, config=_SCHEMA)
class RiskSettings:
    """``[risk]``: every pre-trade limit (units in the module docstring)."""

    read_only: bool = False
    allow_live: bool = False
    allow_short: bool = False
    max_quantity: Amount = 100.0
    max_notional: Amount = 25_000.0
    base_currency: str = "USD"
    price_band_pct: Amount = 5.0
    quote_max_age: Amount = 10.0
    max_position: Amount = 500.0
    max_open_orders: int = 20
    max_orders_per_minute: int = 10
    allowed_sec_types: tuple[str, ...] = ("STK", "CASH", "FUT", "CRYPTO")
    symbol_allow: tuple[str, ...] = ()
    symbol_deny: tuple[str, ...] = ()
    daily_loss_limit: Amount = 2_000.0
    round_to_tick: bool = False
    whatif_margin_check: bool = False
    ack_timeout: Amount = 5.0

    @field_validator("base_currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        return value.strip().upper()

    @field_validator("allowed_sec_types", "symbol_allow", "symbol_deny", mode="before")
    @classmethod
    def _names(cls, value: Any) -> tuple[str, ...]:
        """A list of strings -> upper-case names, blanks and duplicates dropped."""
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of strings, got {value!r}")
        try:
            return text_list(value, "")
        except CellError as exc:
            raise ValueError(exc.reason) from None


@dataclass(frozen=True, config=_SCHEMA)
class AnalysisSettings:
    """``[analysis]``: the benchmark (instrument text) and the window (daily returns) of the risk figures."""

    benchmark: str = "SPY"
    window_days: Annotated[int, Field(ge=20, le=2520)] = 252

    @field_validator("benchmark")
    @classmethod
    def _instrument(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected an instrument such as \"SPY\", got an empty string")
        return value.strip()


@dataclass(frozen=True, config=_SCHEMA)
class Settings:
    """The user's settings: ``connection``, ``risk``, ``source`` (the file read, "" for defaults) and
    ``analysis``."""

    connection: ConnectionSettings = field(default_factory=ConnectionSettings)
    risk: RiskSettings = field(default_factory=RiskSettings)
    source: str = ""
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)

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
            except CellError as exc:
                warnings.append(f"{key}: ignored, {exc.reason}")
        return replace(self, risk=risk), warnings


_RISK_DEFAULTS = RiskSettings()
_RISK_KEYS = frozenset(f.name for f in fields(RiskSettings))
_NUMERIC_MAX = {"max_quantity", "max_notional", "price_band_pct", "quote_max_age", "max_position",
                "max_open_orders", "max_orders_per_minute", "daily_loss_limit", "ack_timeout"}
_ONLY_OFF = {"allow_short", "round_to_tick"}          # True -> False tightens
_ONLY_ON = {"read_only", "whatif_margin_check"}       # False -> True tightens
_NARROW = {"allowed_sec_types", "symbol_allow"}
_NEVER = {"allow_live", "base_currency", "host", "port", "client_id", "market_data_type"}


def _norm_key(key: Any) -> str:
    return "_".join(str(key or "").strip().lower().replace("-", " ").split())


def _tighten_one(risk: RiskSettings, key: str, value: Any, warnings: list[str]) -> RiskSettings:
    """``risk`` with the Config sheet's ``key`` = cell ``value`` applied when it tightens; appends a
    warning when it is ignored. Raises CellError (named ``key``) for a value that cannot be read."""
    if key in _NEVER:
        warnings.append(f"{key}: ignored, a workbook cannot set it (only the user's config file can)")
        return risk
    if key not in _RISK_KEYS:
        warnings.append(f"{key}: ignored, not a risk setting")
        return risk
    current = getattr(risk, key)
    if key in _NUMERIC_MAX:
        new = number(value, key)
        if new is None:
            raise CellError(key, "expected a number, got a blank cell")
        if new < 0:
            raise CellError(key, f"expected a number >= 0, got {value!r}")
        if key == "ack_timeout":          # not a limit: any positive value, capped by the user's
            new = min(new, current)
        if new > current:
            warnings.append(f"{key}: ignored, {_fmt(new)} would loosen the limit {_fmt(current)}")
            return risk
        whole = isinstance(getattr(_RISK_DEFAULTS, key), int)      # counts stay ints, amounts floats
        if whole and not float(new).is_integer():
            raise CellError(key, f"expected a whole number, got {value!r}")
        return _set(risk, key, int(new) if whole else float(new))
    if key in _ONLY_OFF or key in _ONLY_ON:
        flag = boolean(value, key)
        loosens = (key in _ONLY_OFF and flag and not current) or (key in _ONLY_ON and not flag and current)
        if loosens:
            warnings.append(f"{key}: ignored, {flag} would loosen the user's setting {current}")
            return risk
        return _set(risk, key, flag)
    items = text_list(value, key)
    if key in _NARROW:
        if key == "symbol_allow" and not current:       # empty = any: every list is narrower
            return _set(risk, key, items)
        extra = [x for x in items if x not in current]
        if extra:
            warnings.append(f"{key}: ignored {', '.join(extra)}, not allowed by the user's config")
        kept = tuple(x for x in items if x in current)
        if key == "symbol_allow" and not kept:
            # An empty allow list means "any symbol": narrowing to nothing must refuse every symbol instead.
            warnings.append("symbol_allow: no symbol is allowed by both the workbook and the user's config; "
                            "every order is refused")
            return replace(risk, symbol_deny=tuple(dict.fromkeys(risk.symbol_deny + current)))
        return _set(risk, key, kept)
    if key == "symbol_deny":
        return replace(risk, symbol_deny=tuple(dict.fromkeys(current + items)))
    warnings.append(f"{key}: ignored, not a risk setting")      # pragma: no cover - all keys above
    return risk


def _set(risk: RiskSettings, key: str, value: Any) -> RiskSettings:
    return replace(risk, **{key: value})


def _fmt(x: float) -> str:
    return f"{x:,.10g}"


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
    """Settings from the parsed TOML (``{"connection": {...}, "risk": {...}}``). Raises ConfigError
    naming ``section.key`` and what was expected."""
    unknown = set(data) - {"connection", "risk", "analysis"}
    if unknown:
        raise ConfigError(f"{source or 'config'}: unknown section(s) {', '.join(sorted(unknown))}; "
                          f"expected [connection], [risk] and [analysis]")
    conn = _section(ConnectionSettings, data.get("connection", {}), "connection", source)
    risk = _section(RiskSettings, data.get("risk", {}), "risk", source)
    analysis = _section(AnalysisSettings, data.get("analysis", {}), "analysis", source)
    return Settings(conn, risk, source, analysis)


# What a strict pydantic error type means in the file's terms.
_EXPECTED = {"bool_type": "expected true or false", "int_type": "expected a whole number",
             "float_type": "expected a number >= 0", "greater_than_equal": "expected a number >= 0",
             "finite_number": "expected a number >= 0", "string_type": "expected a string"}


def _section(cls: Any, values: Any, name: str, source: str) -> Any:
    where = source or "config"
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: [{name}] must be a table")
    try:
        return cls(**values)
    except ValidationError as exc:
        problems = [f"{name}.{'.'.join(str(p) for p in e['loc']) or '?'}: {_problem(e, cls)}" for e in exc.errors()]
        raise ConfigError(f"{where}: {'; '.join(problems)}") from None


def _problem(error: Any, cls: Any) -> str:
    kind = error["type"]
    if kind == "unexpected_keyword_argument":
        return f"unknown key; known keys: {', '.join(f.name for f in fields(cls))}"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind in _EXPECTED:
        return f"{_EXPECTED[kind]}, got {error['input']!r}"
    return str(error["msg"])
