"""What a workbook file holds that openpyxl might not write back: an inventory of an .xlsx/.xlsm zip
and the difference between two of them.

openpyxl loads a workbook into its own object model and writes only that model back, so parts it
does not model (shapes, form controls, slicers, chartEx charts, images without Pillow, ...) vanish
on save, and charts keep only what its chart model holds. Rather than guess from a list, ibxl
compares the original file with what openpyxl actually writes (:func:`lost_parts`): whatever kind
of part, sheet entry or chart element is fewer afterwards is reported as lost.
"""

from __future__ import annotations

import collections
import io
import re
import xml.etree.ElementTree as ET
import zipfile

__all__ = ["inventory", "lost_parts", "diff_parts", "HARMLESS_CHART_ELEMENTS", "HARMLESS_KINDS"]

# Losses that change nothing a user sees or relies on, so they do not block a save (they are logged):
# - a series' c16:uniqueId (inside c:extLst/c:ext): an identity Excel assigns again when it opens the file;
#   the extLst/ext wrappers are ignored too, but any other element inside them still counts as lost;
# - chart style and colour parts (xl/charts/styleN.xml, colorsN.xml): the presets behind Excel's Chart
#   Styles gallery; the chart's actual formatting is in the chart part, which openpyxl keeps.
HARMLESS_CHART_ELEMENTS = frozenset({"uniqueId", "ext", "extLst"})
HARMLESS_KINDS = frozenset({"chart style or colour part"})

# Package parts by kind: (label, regex on the zip member name).
_PART_KINDS: list[tuple[str, re.Pattern]] = [
    (label, re.compile(rx))
    for label, rx in [
        ("chart", r"^xl/charts/chart\d+\.xml$"),
        ("chart of a new type (chartEx: waterfall, treemap, histogram, ...)", r"^xl/charts/chartEx\d+\.xml$"),
        ("chart style or colour part", r"^xl/charts/(style|colors)\d+\.xml$"),
        ("image or media file", r"^xl/media/"),
        ("pivot table", r"^xl/pivotTables/pivotTable\d+\.xml$"),
        ("pivot cache", r"^xl/pivotCache/pivotCacheDefinition\d+\.xml$"),
        ("form control part", r"^xl/ctrlProps/"),
        ("ActiveX control", r"^xl/activeX/activeX\d+\.xml$"),
        ("slicer", r"^xl/slicers/"),
        ("slicer cache", r"^xl/slicerCaches/"),
        ("timeline", r"^xl/timelines/"),
        ("timeline cache", r"^xl/timelineCaches/"),
        ("embedded object", r"^xl/embeddings/"),
        ("SmartArt diagram part", r"^xl/diagrams/"),
        ("data model", r"^xl/model/"),
        ("threaded comment part", r"^xl/threadedComments/"),
        ("in-cell picture part", r"^xl/richData/"),
        ("Office add-in (web extension) part", r"^xl/webextensions/"),
        ("custom ribbon (customUI)", r"^customUI/"),
        ("VBA project", r"^xl/vbaProject\.bin$"),
        ("query table", r"^xl/queryTables/"),
        ("data connections", r"^xl/connections\.xml$"),
        ("external link", r"^xl/externalLinks/externalLink\d+\.xml$"),
    ]
]

# Entries inside parts, counted by element: (label, member-name regex, element regex).
_ENTRY_KINDS: list[tuple[str, re.Pattern, re.Pattern]] = [
    (label, re.compile(member), re.compile(element))
    for label, member, element in [
        ("shape or text box", r"^xl/drawings/drawing\d+\.xml$", r"<(?:\w+:)?sp[\s>]"),
        ("connector line", r"^xl/drawings/drawing\d+\.xml$", r"<(?:\w+:)?cxnSp[\s>]"),
        ("picture on a sheet", r"^xl/drawings/drawing\d+\.xml$", r"<(?:\w+:)?pic[\s>]"),
        ("form control or button on a sheet", r"^xl/worksheets/sheet\d+\.xml$", r"<(?:\w+:)?control[\s>]"),
        ("VML drawing link (buttons, comment boxes)", r"^xl/worksheets/sheet\d+\.xml$",
         r"<(?:\w+:)?legacyDrawing[\s>]"),
        ("sparkline group", r"^xl/worksheets/sheet\d+\.xml$", r"<(?:\w+:)?sparklineGroup[\s>]"),
        ("Excel 2010+ conditional format", r"^xl/worksheets/sheet\d+\.xml$", r"<x14:conditionalFormatting[\s>]"),
        ("Excel 2010+ data validation", r"^xl/worksheets/sheet\d+\.xml$", r"<x14:dataValidation[\s>]"),
    ]
]

_CHART = re.compile(r"^xl/charts/chart\d+\.xml$")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def inventory(data: bytes) -> tuple[collections.Counter, collections.Counter]:
    """Count what the workbook zip ``data`` holds.

    Returns ``(kinds, chart_elements)``: ``kinds`` counts parts and entries by the labels above;
    ``chart_elements`` counts the element names (``"c:lineChart"``-style local names) over all chart
    parts. Raises zipfile.BadZipFile for something that is not a workbook package.
    """
    kinds: collections.Counter = collections.Counter()
    chart_elements: collections.Counter = collections.Counter()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in z.namelist():
            for label, rx in _PART_KINDS:
                if rx.search(name):
                    kinds[label] += 1
            entry_kinds = [(label, el) for label, member, el in _ENTRY_KINDS if member.search(name)]
            if entry_kinds or _CHART.search(name):
                text = z.read(name).decode("utf-8", "replace")
                for label, el in entry_kinds:
                    kinds[label] += len(el.findall(text))
                if _CHART.search(name):
                    try:
                        root = ET.fromstring(text)
                    except ET.ParseError:
                        continue
                    chart_elements.update(_local(e.tag) for e in root.iter())
    return kinds, chart_elements


def _describe(kinds: collections.Counter, elements: collections.Counter) -> list[str]:
    out = [f"{n} x {label}" for label, n in kinds.items()]
    if elements:
        top = ", ".join(f"{n} x {tag}" for tag, n in elements.most_common(8))
        more = len(elements) - 8
        out.append(f"chart content openpyxl does not model: {top}" + (f" (+{more} more kinds)" if more > 0 else ""))
    return out


def diff_parts(original: bytes, written: bytes) -> tuple[list[str], list[str]]:
    """``(lost, harmless)``: what ``written`` (openpyxl's output) lacks compared with ``original``, as
    readable texts such as ``"2 x shape or text box"`` or ``"chart content openpyxl does not model:
    1 x dataDisplayOptions16"``; ``harmless`` lists the losses of :data:`HARMLESS_CHART_ELEMENTS` and
    :data:`HARMLESS_KINDS` separately."""
    k0, c0 = inventory(original)
    k1, c1 = inventory(written)
    kinds, elements = k0 - k1, c0 - c1
    lost_kinds = collections.Counter({k: n for k, n in kinds.items() if k not in HARMLESS_KINDS})
    lost_elements = collections.Counter({k: n for k, n in elements.items() if k not in HARMLESS_CHART_ELEMENTS})
    return (
        _describe(lost_kinds, lost_elements),
        _describe(kinds - lost_kinds, elements - lost_elements),
    )


def lost_parts(original: bytes, written: bytes) -> list[str]:
    """The losses that matter (see :func:`diff_parts`); empty when nothing would be lost."""
    return diff_parts(original, written)[0]
