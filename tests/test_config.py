"""Settings: the user's TOML file, its errors, and the workbook Config sheet that may only tighten.
The Config sheet is a real workbook written with openpyxl and read back as the Excel side reads it."""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest

from addin.config import ConfigError, RiskSettings, Settings, config_path, journal_path, load_settings


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_safe_for_a_new_user(tmp_path):
    s = load_settings(tmp_path / "missing.toml")
    assert s == Settings()
    assert (s.connection.host, s.connection.port) == ("127.0.0.1", 4002)
    r = s.risk
    assert r.allow_live is False and r.allow_short is False and r.read_only is False
    assert "OPT" not in r.allowed_sec_types and r.max_quantity <= 100 and r.max_notional <= 25_000


def test_the_file_is_found_by_ibxl_config_else_home(tmp_path, monkeypatch):
    monkeypatch.setenv("IBXL_CONFIG", str(tmp_path / "mine.toml"))
    assert config_path() == tmp_path / "mine.toml"
    write(tmp_path / "mine.toml", "[risk]\nmax_quantity = 7\n")
    assert load_settings().risk.max_quantity == 7.0
    assert journal_path() == tmp_path / "journal.sqlite3"
    monkeypatch.setenv("IBXL_JOURNAL", str(tmp_path / "j" / "orders.db"))
    assert journal_path() == tmp_path / "j" / "orders.db"
    monkeypatch.delenv("IBXL_CONFIG")
    monkeypatch.delenv("IBXL_JOURNAL")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config_path() == tmp_path / ".ibxl" / "config.toml"


def test_every_section_and_key_is_read(tmp_path):
    p = write(tmp_path / "c.toml", """
[connection]
host = "10.0.0.5"
port = 7497
client_id = 9
market_data_type = "delayed"

[risk]
allow_live = true
allow_short = true
max_quantity = 500
max_notional = 1e6
price_band_pct = 2.5
quote_max_age = 3
max_position = 900
max_open_orders = 5
max_orders_per_minute = 4
allowed_sec_types = ["stk", "FUT"]
symbol_allow = ["aapl", "ES"]
symbol_deny = ["GME"]
daily_loss_limit = 750.5
round_to_tick = true
whatif_margin_check = true
base_currency = "eur"
""")
    s = load_settings(p)
    assert s.source == str(p)
    assert (s.connection.host, s.connection.port, s.connection.client_id, s.connection.market_data_type) == \
        ("10.0.0.5", 7497, 9, "delayed")
    r = s.risk
    assert (r.allow_live, r.allow_short, r.round_to_tick, r.whatif_margin_check) == (True, True, True, True)
    assert (r.max_quantity, r.max_notional, r.price_band_pct, r.quote_max_age) == (500.0, 1e6, 2.5, 3.0)
    assert (r.max_position, r.max_open_orders, r.max_orders_per_minute, r.daily_loss_limit) == (900.0, 5, 4, 750.5)
    assert r.allowed_sec_types == ("STK", "FUT") and r.symbol_allow == ("AAPL", "ES") and r.symbol_deny == ("GME",)
    assert r.base_currency == "EUR"


@pytest.mark.parametrize("text, names", [
    ("[risk]\nmax_quantiy = 5\n", "risk.max_quantiy: unknown key"),
    ("[risk]\nmax_quantity = \"lots\"\n", "risk.max_quantity: expected a number"),
    ("[risk]\nallow_live = \"yes\"\n", "risk.allow_live: expected true or false"),
    ("[risk]\nmax_open_orders = 2.5\n", "risk.max_open_orders: expected a whole number"),
    ("[risk]\nmax_notional = -1\n", "risk.max_notional: expected a number >= 0"),
    ("[connection]\nmarket_data_type = \"fast\"\n", "connection.market_data_type: expected one of"),
    ("[orders]\nx = 1\n", "unknown section(s) orders"),
    ("[risk\nmax_quantity = 1\n", "cannot read the config file"),
])
def test_bad_files_name_the_key(tmp_path, text, names):
    with pytest.raises(ConfigError, match=names.replace("(", r"\(").replace(")", r"\)")):
        load_settings(write(tmp_path / "bad.toml", text))


def config_sheet(tmp_path: Path, pairs: list[tuple]) -> dict:
    """A workbook Config sheet written with openpyxl and read back as key -> cell value."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Config"
    ws.append(["Key", "Value"])
    for k, v in pairs:
        ws.append([k, v])
    wb.save(tmp_path / "book.xlsx")
    back = openpyxl.load_workbook(tmp_path / "book.xlsx")["Config"]
    return {k: v for k, v in back.iter_rows(min_row=2, values_only=True) if k is not None}


USER = Settings(risk=RiskSettings(max_quantity=100, max_notional=50_000, price_band_pct=5, allow_short=True,
                                  round_to_tick=True, allowed_sec_types=("STK", "FUT", "CASH"),
                                  symbol_deny=("GME",)))


def test_a_workbook_may_tighten_every_kind_of_limit(tmp_path):
    wb = config_sheet(tmp_path, [("Max Quantity", 10), ("max-notional", "1,000"), ("PRICE_BAND_PCT", 1.5),
                                 ("allow_short", "FALSE"), ("round_to_tick", False), ("read_only", "TRUE"),
                                 ("whatif_margin_check", 1), ("allowed_sec_types", "stk"),
                                 ("symbol_allow", "AAPL, MSFT"), ("symbol_deny", "TSLA"), ("max_open_orders", 3),
                                 ("quote_max_age", 2), ("daily_loss_limit", 100)])
    s, warnings = USER.tighten(wb)
    assert warnings == []
    r = s.risk
    assert (r.max_quantity, r.max_notional, r.price_band_pct) == (10, 1_000, 1.5)
    assert (r.allow_short, r.round_to_tick, r.read_only, r.whatif_margin_check) == (False, False, True, True)
    assert r.allowed_sec_types == ("STK",) and r.symbol_allow == ("AAPL", "MSFT")
    assert r.symbol_deny == ("GME", "TSLA") and r.max_open_orders == 3 and isinstance(r.max_open_orders, int)
    assert USER.risk.max_quantity == 100            # the user's settings are not changed


def test_a_workbook_can_never_loosen_and_each_attempt_is_a_warning_naming_the_key(tmp_path):
    wb = config_sheet(tmp_path, [("max_quantity", 1e9), ("price_band_pct", 50), ("allow_live", "TRUE"),
                                 ("allow_short", True), ("allowed_sec_types", "STK,OPT"), ("port", 7496),
                                 ("base_currency", "JPY"), ("max_notional", "#N/A"), ("colour", "red"),
                                 ("symbol_deny", None)])
    user = Settings(risk=RiskSettings(allow_short=False, read_only=False))
    s, warnings = user.tighten(wb)
    r = s.risk
    assert r.max_quantity == user.risk.max_quantity and r.price_band_pct == user.risk.price_band_pct
    assert r.allow_live is False and r.allow_short is False and r.base_currency == "USD"
    assert r.allowed_sec_types == ("STK",)          # OPT was never allowed by the user: dropped
    keys = [w.split(":")[0] for w in warnings]
    assert sorted(keys) == sorted(["max_quantity", "price_band_pct", "allow_live", "allow_short", "allowed_sec_types",
                                   "port", "base_currency", "max_notional", "colour"])
    assert any("would loosen" in w for w in warnings)


def test_a_workbook_cannot_turn_allow_live_on_even_when_the_user_has_it_off_or_on():
    for user_value in (False, True):
        s, warnings = Settings(risk=RiskSettings(allow_live=user_value)).tighten({"allow_live": True})
        assert s.risk.allow_live is user_value and warnings and warnings[0].startswith("allow_live:")


def test_read_only_once_set_by_the_user_cannot_be_cleared_by_a_workbook():
    s, warnings = Settings(risk=RiskSettings(read_only=True)).tighten({"read_only": False})
    assert s.risk.read_only is True and warnings[0].startswith("read_only:")


def test_a_workbook_allow_list_that_shares_no_symbol_with_the_users_refuses_every_symbol():
    # An empty allow list means "any symbol", so the empty intersection must not become it.
    user = Settings(risk=RiskSettings(symbol_allow=("AAPL",)))
    s, warnings = user.tighten({"symbol_allow": "TSLA"})
    r = s.risk
    assert warnings and warnings[-1].startswith("symbol_allow:")
    for sym in ("AAPL", "TSLA", "MSFT"):
        assert (r.symbol_allow and sym not in r.symbol_allow) or sym in r.symbol_deny


def test_on_and_off_tighten_like_true_and_false():
    s, warnings = Settings(risk=RiskSettings(read_only=False)).tighten({"read_only": "on"})
    assert s.risk.read_only is True and warnings == []
