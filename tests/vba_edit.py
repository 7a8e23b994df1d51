"""Change text in a VBA module of a real .xlsm without changing any stream's size, for tests.

A VBA module's source is stored compressed (MS-OVBA 2.4.1): literal bytes, and copy tokens that repeat
earlier output. A literal byte can be replaced in place (the stream keeps its size, which is all olefile
can write); every copy of it changes with it. :func:`replace_in_module` decompresses while remembering,
for each output byte, the literal it came from, and rewrites those literals. Text that was copied from
the same literals elsewhere in the module changes too; the tests only rely on the text they asked for.
"""

from __future__ import annotations

import io
import re
import zipfile

import olefile


def _decompress_with_origins(data: bytes, start: int) -> tuple[bytes, list[int]]:
    """Decompress the container at ``data[start]``; returns (text, origin offset in ``data`` per byte)."""
    if data[start] != 1:
        raise ValueError("not a compressed container")
    out = bytearray()
    origin: list[int] = []
    pos = start + 1
    while pos + 2 <= len(data):
        header = int.from_bytes(data[pos:pos + 2], "little")
        if (header >> 12) & 0x7 != 0b011:
            raise ValueError(f"bad chunk signature at {pos}")
        end = min(pos + (header & 0x0FFF) + 3, len(data))
        chunk_start = len(out)
        pos += 2
        if not header >> 15:                  # raw chunk
            out += data[pos:pos + 4096]
            origin += range(pos, pos + 4096)
            pos += 4096
            continue
        while pos < end:
            flags = data[pos]
            pos += 1
            for bit in range(8):
                if pos >= end:
                    break
                if not (flags >> bit) & 1:
                    out.append(data[pos])
                    origin.append(pos)
                    pos += 1
                    continue
                token = int.from_bytes(data[pos:pos + 2], "little")
                pos += 2
                d = len(out) - chunk_start
                bits = max((d - 1).bit_length(), 4)
                length = (token & (0xFFFF >> bits)) + 3
                offset = (token >> (16 - bits)) + 1
                for _ in range(length):
                    out.append(out[-offset])
                    origin.append(origin[-offset])
    return bytes(out), origin


def replace_in_module(xlsm: bytes, module: str, pattern: str, new: str) -> bytes:
    """The workbook ``xlsm`` with each match of regex ``pattern``'s group 1 in VBA module ``module``
    replaced by ``new`` (same length). Raises ValueError when the module or the pattern is not found."""
    zin = zipfile.ZipFile(io.BytesIO(xlsm))
    ole = olefile.OleFileIO(io.BytesIO(zin.read("xl/vbaProject.bin")))
    stream = ["VBA", module]
    data = bytearray(ole.openstream(stream).read())
    for start in (i for i, b in enumerate(data) if b == 1):
        try:
            text, origin = _decompress_with_origins(bytes(data), start)
        except (ValueError, IndexError):
            continue
        if f'Attribute VB_Name = "{module}"'.encode() in text:
            break
    else:
        raise ValueError(f"no source found in VBA module {module}")
    matches = list(re.finditer(pattern.encode(), text))
    if not matches:
        raise ValueError(f"{pattern!r} not in module {module}")
    for m in matches:
        old = m.group(1)
        if len(old) != len(new):
            raise ValueError("the replacement must keep the length")
        for k, ch in enumerate(new.encode()):
            data[origin[m.start(1) + k]] = ch
    ole.close()
    bin_io = io.BytesIO(zin.read("xl/vbaProject.bin"))
    ole = olefile.OleFileIO(bin_io, write_mode=True)
    ole.write_stream(stream, bytes(data))
    ole.close()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            body = bin_io.getvalue() if info.filename == "xl/vbaProject.bin" else zin.read(info.filename)
            zout.writestr(info, body)
    return out.getvalue()
