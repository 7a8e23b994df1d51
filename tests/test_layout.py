"""The package layout holds: the client packages and the paper gateway never import each other (only
``addin.app`` wires them), the shared top-level modules (config, cells, backoff) import no package of
ours, and the command line loads neither the gateway, pandas nor xlwings until a
command needs them. Read from the source (AST) and from a fresh interpreter's sys.modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ADDIN = Path(__file__).resolve().parents[1] / "addin"
CLIENT = ("ib", "market", "account", "orders", "excel", "analysis")


def imported_modules(path: Path) -> set[str]:
    """Absolute dotted names a module imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(ADDIN.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return out


def modules_of(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ADDIN / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", modules_of(*CLIENT), ids=lambda p: str(p.relative_to(ADDIN)))
def test_client_packages_never_import_the_paper_gateway_the_app_or_the_service(path):
    bad = {m for m in imported_modules(path) if m.startswith(("addin.paper", "addin.app", "addin.service"))}
    assert not bad, f"{path.relative_to(ADDIN)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules_of("paper"), ids=lambda p: str(p.relative_to(ADDIN)))
def test_the_paper_gateway_never_imports_the_client_packages(path):
    bad = {m for m in imported_modules(path) if m.startswith(tuple(f"addin.{c}" for c in (*CLIENT, "app", "service")))}
    assert not bad, f"{path.relative_to(ADDIN)} imports {sorted(bad)}"


HEAVY = ("addin.paper", "pandas", "xlwings", "numpy", "pydantic")


def test_the_command_line_and_ibxl_check_load_no_gateway_pandas_or_xlwings():
    code = ("import sys, addin.app.cli, addin.app.doctor; "
            f"print('\\n'.join(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_ibxl_help_imports_no_gateway_pandas_or_xlwings_module():
    # -X importtime lists every module the interpreter imported, on stderr.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "addin.app.cli", "--help"],
                          capture_output=True, text=True, check=True)
    assert "paper" in proc.stdout                       # the command is listed...
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line]
    assert len(imported) > 50
    assert [m for m in imported if m.startswith(HEAVY)] == []      # ...without loading it


@pytest.mark.parametrize("path", modules_of("analysis"), ids=lambda p: str(p.relative_to(ADDIN)))
def test_analysis_computes_from_frames_and_imports_only_protocol(path):
    """addin/analysis gets positions, prices and bars as frames from addin/app: it never reaches IB's
    session, the portfolio or market data itself."""
    bad = {m for m in imported_modules(path)
           if m.startswith("addin") and m != "addin" and not m.startswith(("addin.protocol", "addin.analysis"))}
    assert not bad, f"{path.relative_to(ADDIN)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules_of("protocol"), ids=lambda p: str(p.relative_to(ADDIN)))
def test_protocol_depends_on_nothing_of_ours_but_itself(path):
    bad = {m for m in imported_modules(path) if m.startswith("addin") and not m.startswith("addin.protocol")}
    assert not bad, f"{path.relative_to(ADDIN)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((ADDIN / "paper" / "services").glob("*.py")),
                         ids=lambda p: str(p.relative_to(ADDIN)))
def test_paper_services_know_their_collaborators_not_the_server(path):
    """A service gets the market, broker, callbacks it uses (wired by server.py), never the server."""
    bad = {m for m in imported_modules(path) if m.startswith("addin.paper.server")}
    assert not bad, f"{path.relative_to(ADDIN)} imports {sorted(bad)}"
    assert "self.server" not in path.read_text(), f"{path.relative_to(ADDIN)} holds a back-reference to the server"


SHARED = sorted(p for p in ADDIN.glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", SHARED, ids=lambda p: p.name)
def test_the_shared_top_level_modules_import_only_each_other(path):
    """addin/config.py, cells.py, backoff.py ... are used by the client packages, the app (and may be by
    the gateway): they depend on no package of ours but protocol, so none of those layers reaches another
    through them."""
    shared = {f"addin.{p.stem}" for p in SHARED}
    bad = {m for m in imported_modules(path)
           if m.startswith("addin") and m != "addin" and not m.startswith("addin.protocol")
           and m not in shared and m.rsplit(".", 1)[0] not in shared}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_no_two_classes_in_the_product_share_a_name():
    """A class name says what the thing is, once: the client's and the gateway's pieces included."""
    seen: dict[str, list[str]] = {}
    for path in sorted(ADDIN.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                seen.setdefault(node.name, []).append(str(path.relative_to(ADDIN)))
    assert {name: where for name, where in seen.items() if len(where) > 1} == {}
