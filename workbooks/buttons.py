"""Form buttons for the ibxl .xlsm: Excel's legacy VML drawing part, written and read without Excel.

A form button (Developer > Insert > Form Controls > Button) is a VML shape with
``<x:ClientData ObjectType="Button">``; its ``<x:FmlaMacro>`` holds the text of *Assign Macro*. That
text may be a macro with arguments in single quotes, ``'RunPython "import m; m.f()"'`` (XML-escaped in
the part): Excel runs it like ``Application.Run``, so each button calls xlwings' ``RunPython`` (in the
workbook's own VBA project) with the Python call, and no VBA of ours is needed.

openpyxl does not model VML, but with ``keep_vba=True`` it keeps a sheet's ``legacyDrawing`` link and
copies ``xl/drawings/vmlDrawingN.vml`` from the workbook's original package (``Workbook.vba_archive``)
on every save; :func:`attach` puts the part there, so the builder's save and every later ``ibxl run``
save of the .xlsm write the buttons back unchanged.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from html import escape, unescape

__all__ = ["Button", "VML_PART", "button_vml", "attach", "read_buttons", "macro_text", "python_call"]

VML_PART = "xl/drawings/vmlDrawing1.vml"   # openpyxl copies xl/drawings/*vmlDrawing<one digit>.vml only


@dataclass(frozen=True)
class Button:
    """One button: ``caption``; ``macro`` its *Assign Macro* text; anchored in cell (``row``, ``col``),
    both 0-based, spanning ``width_px`` x ``height_px`` from ``left_px``/``top_px`` inside that cell."""

    caption: str
    macro: str
    row: int
    col: int
    left_px: int = 3
    top_px: int = 3
    width_px: int = 194
    height_px: int = 26


def macro_text(python: str) -> str:
    """The *Assign Macro* text that runs ``python`` through xlwings: ``'RunPython "python"'``.
    ``python`` must hold no double quote (VBA would need it doubled) and no single quote (it ends the
    macro text)."""
    if '"' in python or "'" in python:
        raise ValueError(f"a button's Python call must not contain quotes: {python!r}")
    return f"'RunPython \"{python}\"'"


def python_call(macro: str) -> str | None:
    """The Python code of a :func:`macro_text` (``'RunPython "x"'`` -> ``x``), or None for any other macro."""
    m = re.fullmatch(r"'RunPython \"([^\"']*)\"'", macro.strip())
    return m.group(1) if m else None


def _xml_text(text: str) -> str:
    """``text`` escaped as Excel writes it in VML: &, <, > and double quotes; single quotes as they are."""
    return escape(text, quote=False).replace('"', "&quot;")


def _shape(i: int, b: Button, col_px: list[int], row_px: list[int]) -> str:
    left = sum(col_px[:b.col]) + b.left_px
    top = sum(row_px[:b.row]) + b.top_px
    style = (f"position:absolute;margin-left:{left * 0.75:.2f}pt;margin-top:{top * 0.75:.2f}pt;"
             f"width:{b.width_px * 0.75:.2f}pt;height:{b.height_px * 0.75:.2f}pt;z-index:{i};mso-wrap-style:tight")
    anchor = f"{b.col}, {b.left_px}, {b.row}, {b.top_px}, {b.col}, {b.left_px + b.width_px}, {b.row}, " \
             f"{b.top_px + b.height_px}"
    return (
        f'<v:shape id="_x0000_s{1024 + i}" type="#_x0000_t201" style="{style}" o:button="t" '
        'fillcolor="buttonFace [67]" strokecolor="windowText [64]" o:insetmode="auto">'
        '<v:fill color2="buttonFace [67]" o:detectmouseclick="t"/>'
        '<o:lock v:ext="edit" rotation="t"/>'
        '<v:textbox style="mso-direction-alt:auto" o:singleclick="f">'
        f'<div style="text-align:center"><font face="Calibri" size="200" color="#000000">{_xml_text(b.caption)}</font>'
        '</div></v:textbox>'
        '<x:ClientData ObjectType="Button">'
        f"<x:Anchor>{anchor}</x:Anchor>"
        "<x:AutoFill>False</x:AutoFill>"
        f"<x:FmlaMacro>{_xml_text(b.macro)}</x:FmlaMacro>"
        "<x:TextHAlign>Center</x:TextHAlign><x:TextVAlign>Center</x:TextVAlign>"
        "</x:ClientData></v:shape>"
    )


def button_vml(buttons: list[Button], col_px: list[int], row_px: list[int]) -> bytes:
    """The VML drawing part holding ``buttons``. ``col_px``/``row_px``: the sheet's column widths and
    row heights in pixels from the first one (for the shapes' absolute position; Excel places them by
    their cell anchor)."""
    shapes = "".join(_shape(i, b, col_px, row_px) for i, b in enumerate(buttons, start=1))
    return (
        '<xml xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office" '
        'xmlns:x="urn:schemas-microsoft-com:office:excel">'
        '<o:shapelayout v:ext="edit"><o:idmap v:ext="edit" data="1"/></o:shapelayout>'
        '<v:shapetype id="_x0000_t201" coordsize="21600,21600" o:spt="201" path="m,l,21600r21600,l21600,xe">'
        '<v:stroke joinstyle="miter"/>'
        '<v:path shadowok="f" o:extrusionok="f" strokeok="f" fillok="f" o:connecttype="rect"/>'
        '<o:lock v:ext="edit" shapetype="t"/></v:shapetype>'
        f"{shapes}</xml>"
    ).encode()


def attach(wb, ws, vml: bytes) -> None:
    """Give openpyxl worksheet ``ws`` of macro workbook ``wb`` (loaded with ``keep_vba=True``) the VML
    drawing ``vml``: it is added to ``wb.vba_archive`` (replacing a part of that name) and linked from
    the sheet, so openpyxl writes both on save."""
    if wb.vba_archive is None:
        raise ValueError("buttons need a macro-enabled workbook loaded with keep_vba=True")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for info in wb.vba_archive.infolist():
            if info.filename != VML_PART:
                z.writestr(info, wb.vba_archive.read(info.filename))
        z.writestr(VML_PART, vml)
    wb.vba_archive = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    ws.legacy_drawing = VML_PART


def read_buttons(xlsm: bytes) -> dict[str, list[tuple[str, str]]]:
    """The form buttons of the workbook package ``xlsm``, per sheet name: ``[(caption, macro text)]``,
    following each sheet's ``legacyDrawing`` relationship to its VML part."""
    out: dict[str, list[tuple[str, str]]] = {}
    with zipfile.ZipFile(io.BytesIO(xlsm)) as z:
        names = set(z.namelist())
        book = z.read("xl/workbook.xml").decode()
        book_rels = _rels(z.read("xl/_rels/workbook.xml.rels").decode())
        for name, rid in re.findall(r'<sheet [^>]*name="([^"]+)"[^>]*r:id="([^"]+)"', book):
            sheet_path = _resolve("xl/", book_rels[rid])
            sheet = z.read(sheet_path).decode()
            link = re.search(r'<(?:\w+:)?legacyDrawing [^>]*r:id="([^"]+)"', sheet)
            rels_path = sheet_path.replace("worksheets/", "worksheets/_rels/") + ".rels"
            if not link or rels_path not in names:
                continue
            vml_path = _resolve(sheet_path.rsplit("/", 1)[0] + "/", _rels(z.read(rels_path).decode())[link.group(1)])
            vml = z.read(vml_path).decode("utf-8", "replace")
            for shape in re.findall(r"<v:shape\b.*?</v:shape>", vml, re.S):
                if 'ObjectType="Button"' not in shape:
                    continue
                box = re.search(r"<v:textbox.*?</v:textbox>", shape, re.S)
                caption = unescape(re.sub(r"<[^>]+>", "", box.group(0))).strip() if box else ""
                macro = re.search(r"<x:FmlaMacro>(.*?)</x:FmlaMacro>", shape, re.S)
                out.setdefault(unescape(name), []).append((caption, unescape(macro.group(1)) if macro else ""))
    return out


def _rels(text: str) -> dict[str, str]:
    """A relationships part's Id -> Target."""
    out = {}
    for rel in re.findall(r"<Relationship\b[^>]*>", text):
        rid, target = re.search(r'\bId="([^"]+)"', rel), re.search(r'\bTarget="([^"]+)"', rel)
        if rid and target:
            out[rid.group(1)] = target.group(1)
    return out


def _resolve(base: str, target: str) -> str:
    if target.startswith("/"):
        return target[1:]
    parts = (base + target).split("/")
    out: list[str] = []
    for p in parts:
        if p == "..":
            out.pop()
        elif p not in ("", "."):
            out.append(p)
    return "/".join(out)
