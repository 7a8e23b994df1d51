"""What a macro-enabled workbook's VBA project declares, read with oletools (olevba) without Excel.

The ibxl ``.xlsm`` carries xlwings' VBA module, which loads ``xlwings64-<version>.dll`` (32-bit Excel:
``xlwings32-<version>.dll``) from the Python environment. That DLL ships inside the xlwings package of
exactly that version, so the installed xlwings must be the version the workbook declares, or every UDF
and button fails with "Could not load xlwings64-....dll".
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

__all__ = ["VbaModule", "vba_modules", "declared_xlwings_version", "XlwingsDllNotDeclared"]

# In xlwings' module: Const XLPyDLLName As String = "xlwings64-0.37.8.dll"
_DLL_NAME = re.compile(r'XLPyDLLName\s+As\s+String\s*=\s*"xlwings(?:32|64)-([0-9][0-9A-Za-z.+-]*)\.dll"')


class XlwingsDllNotDeclared(ValueError):
    """The workbook has no VBA project, or none that names an xlwings DLL."""


class VbaModule:
    """One module of a VBA project: ``name`` (``"xlwings"``, ``"Module1"``, ...) and its source ``code``."""

    def __init__(self, name: str, code: str):
        self.name = name
        self.code = code

    def __repr__(self) -> str:
        return f"VbaModule({self.name!r}, {len(self.code)} chars)"


def vba_modules(path: str | Path) -> list[VbaModule]:
    """The VBA modules of the workbook at ``path`` (.xlsm/.xlsb/.xls), as olevba decompresses them.
    Empty for a workbook without macros. Raises FileNotFoundError; ImportError when oletools is missing."""
    from oletools.olevba import VBA_Parser

    # olevba warns on every file that it cannot detect "VBA stomping" (malware analysis, not our concern)
    logging.getLogger("olevba").setLevel(logging.ERROR)
    parser = VBA_Parser(str(path))
    try:
        if not parser.detect_vba_macros():
            return []
        return [VbaModule(Path(vba_name).stem, code or "")
                for _file, _stream, vba_name, code in parser.extract_macros()]
    finally:
        parser.close()


def declared_xlwings_version(path: str | Path) -> str:
    """The xlwings version whose DLL the workbook's VBA loads (``"0.37.8"`` for ``xlwings64-0.37.8.dll``).

    Raises XlwingsDllNotDeclared when no module declares one, or when the 32- and 64-bit names disagree.
    """
    found = {m.group(1) for module in vba_modules(path) for m in _DLL_NAME.finditer(module.code)}
    if not found:
        raise XlwingsDllNotDeclared(f"{Path(path).name}: its VBA project declares no xlwings DLL "
                                    "(no xlwings module: not built on xlwings' template?)")
    if len(found) > 1:
        raise XlwingsDllNotDeclared(f"{Path(path).name}: its VBA project declares several xlwings DLL "
                                    f"versions: {sorted(found)}")
    return found.pop()
