"""The RTD server's COM face for Windows Excel: ``=RTD("ibxl.rtd",,"AAPL","bid")``.

:class:`IbxlRtdServer` is the COM class Excel creates from the ProgID ``ibxl.rtd``; it forwards each
IRtdServer call to a plain :class:`~addin.service.rtd.RtdServer` (tested on any OS), adapting pywin32's
conventions the way its demo ``win32com/demos/excelRTDServer.py`` does: the IRtdServer and
IRTDUpdateEvent interfaces come from Excel's type library (``win32com.universal``), ByRef arguments are
returned after the result (ConnectData's GetNewValues, RefreshData's TopicCount).

It runs as a *local server*: pywin32's ``localserver.py`` under the ``pythonw.exe`` that ran
``ibxl excel install``, outside Excel's process (a Python fault cannot take Excel down; the venv's
packages are used). Excel's callback belongs to the server's main COM thread, so it is marshalled to
the watcher thread (CoMarshalInterThreadInterfaceInStream), which has its own COM apartment.

Registration is per user (``HKEY_CURRENT_USER\\Software\\Classes``, no administrator rights), the keys
pywin32's ``win32com.server.register.RegisterServer`` writes machine-wide: :func:`install`,
:func:`uninstall`, :func:`registry_entries`. This module imports anywhere; pywin32 is imported only
when Excel starts the server or when installing, which on another OS raises :class:`NeedsWindows`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from .rtd import RtdServer

__all__ = ["IbxlRtdServer", "CLSID", "PROGID", "NeedsWindows", "install", "uninstall", "registry_entries"]

CLSID = "{D62266EC-34A2-43D0-9506-6150729BF8EF}"     # ours: never reuse another server's
PROGID = "ibxl.rtd"
DESCRIPTION = "ibxl RTD server (Interactive Brokers quotes in Excel through the ibxl service)"
CLASS_SPEC = "addin.service.rtd_com.IbxlRtdServer"
CLSCTX_LOCAL_SERVER = 4                              # pythoncom.CLSCTX_LOCAL_SERVER
IRTDUPDATEEVENT_CLSID = "{A43788C1-D91B-11D3-8F39-00C04F3651B8}"
EXCEL_TYPELIB = ("{00020813-0000-0000-C000-000000000046}", 0, 1, 4)   # Excel XP: the first with RTD
NEEDS_WINDOWS = ("RTD needs Windows Excel (a COM server registered with pywin32); on this system "
                 "ibxl formulas keep using the recalculation path (the pump recalculates quote cells).")

_interfaces_ready = False


class NeedsWindows(RuntimeError):
    """RTD registration asked for on an OS without COM (Linux, macOS)."""

    def __init__(self):
        super().__init__(NEEDS_WINDOWS)


def _register_interfaces() -> None:
    """Tell pywin32 about Excel's IRtdServer / IRTDUpdateEvent (once per process)."""
    global _interfaces_ready
    if _interfaces_ready:
        return
    from win32com import universal
    from win32com.client import gencache
    gencache.EnsureModule(*EXCEL_TYPELIB)
    universal.RegisterInterfaces(*EXCEL_TYPELIB, ["IRtdServer", "IRTDUpdateEvent"])
    _interfaces_ready = True


class _ComRtdServer(RtdServer):
    """RtdServer whose watcher thread calls Excel's callback through a marshalled interface."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._stream: Any = None

    def ServerStart(self, callback: Any) -> int:
        import pythoncom
        self._stream = pythoncom.CoMarshalInterThreadInterfaceInStream(pythoncom.IID_IDispatch, callback)
        return super().ServerStart(callback)

    def _thread_callback(self, callback: Any) -> Any:
        import pythoncom
        import win32com.client
        pythoncom.CoInitializeEx(pythoncom.COINIT_APARTMENTTHREADED)
        dispatch = pythoncom.CoGetInterfaceAndReleaseStream(self._stream, pythoncom.IID_IDispatch)
        self._stream = None
        return win32com.client.CLSIDToClass.GetClass(IRTDUPDATEEVENT_CLSID)(dispatch)

    def _thread_done(self) -> None:
        import pythoncom
        pythoncom.CoUninitialize()


class IbxlRtdServer:
    """The COM class (ProgID ``ibxl.rtd``) Excel creates; each method is IRtdServer's."""

    _reg_clsid_ = CLSID
    _reg_progid_ = PROGID
    _reg_desc_ = DESCRIPTION
    _reg_clsctx_ = CLSCTX_LOCAL_SERVER
    _com_interfaces_ = ["IRtdServer"]
    _public_methods_ = ["ServerStart", "ConnectData", "RefreshData", "DisconnectData", "Heartbeat",
                        "ServerTerminate"]

    def __init__(self):
        _register_interfaces()
        self._server = _ComRtdServer()

    def ServerStart(self, CallbackObject):
        return self._server.ServerStart(CallbackObject)

    def ConnectData(self, TopicID, Strings, GetNewValues):
        # GetNewValues is ByRef: True asks Excel to show the value returned now.
        return self._server.ConnectData(TopicID, list(Strings or ()), GetNewValues), True

    def RefreshData(self, TopicCount):
        count, (ids, values) = self._server.RefreshData()
        return (tuple(ids), tuple(values)), count          # a 2 x count array, then TopicCount (ByRef)

    def DisconnectData(self, TopicID):
        self._server.DisconnectData(TopicID)

    def Heartbeat(self):
        return self._server.Heartbeat()

    def ServerTerminate(self):
        self._server.ServerTerminate()


# --- registration (current user) ---------------------------------------------------------------------------
def registry_entries(pythonw: str, localserver: str, python_path: str) -> list[tuple[str, str | None, str]]:
    """``(subkey of HKEY_CURRENT_USER, value name or None for the default, value)`` for the class:
    what pywin32's RegisterServer writes under HKEY_CLASSES_ROOT, per user. ``pythonw``: the
    interpreter Excel starts; ``localserver``: pywin32's ``win32com/server/localserver.py``;
    ``python_path``: the folder holding the ``addin`` package."""
    root = r"Software\Classes"
    clsid = rf"{root}\CLSID\{CLSID}"
    return [
        (clsid, None, DESCRIPTION),
        (rf"{clsid}\LocalServer32", None, f'"{pythonw}" "{localserver}" {CLSID}'),
        (rf"{clsid}\PythonCOM", None, CLASS_SPEC),
        (rf"{clsid}\PythonCOMPath", None, python_path),
        (rf"{clsid}\ProgID", None, PROGID),
        (rf"{root}\AppID\{CLSID}", None, PROGID),
        (rf"{root}\{PROGID}", None, DESCRIPTION),
        (rf"{root}\{PROGID}\CLSID", None, CLSID),
    ]


def _require_windows() -> None:
    if sys.platform != "win32":
        raise NeedsWindows()


def install() -> list[str]:
    """Register ``ibxl.rtd`` for the current user (no administrator rights). Returns the keys written.
    Raises NeedsWindows elsewhere, ImportError without pywin32, OSError when the registry refuses."""
    _require_windows()
    import winreg

    import win32com.server

    server = Path(win32com.server.__file__).parent / "localserver.py"
    pythonw = Path(sys.executable).with_name("pythonw.exe")
    if not pythonw.exists():
        pythonw = Path(sys.executable)
    package_root = str(Path(__file__).resolve().parents[2])
    entries = registry_entries(str(pythonw), str(server), package_root)
    for subkey, name, value in entries:
        with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, subkey, 0, winreg.KEY_WRITE) as key:  # type: ignore[attr-defined]
            winreg.SetValueEx(key, name, 0, winreg.REG_SZ, value)  # type: ignore[attr-defined]
    return [subkey for subkey, _, _ in entries]


def uninstall() -> list[str]:
    """Remove the current user's ``ibxl.rtd`` registration. Returns the keys removed (missing ones are
    skipped). Raises NeedsWindows elsewhere."""
    _require_windows()
    import winreg
    removed = []
    tops = {r"Software\Classes\CLSID" + "\\" + CLSID, r"Software\Classes\AppID" + "\\" + CLSID,
            r"Software\Classes" + "\\" + PROGID}
    for top in sorted(tops):
        if _delete_tree(winreg, top):
            removed.append(top)
    return removed


def _delete_tree(winreg: Any, subkey: str) -> bool:
    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, subkey, 0, winreg.KEY_ALL_ACCESS) as key:
            children = []
            i = 0
            while True:
                try:
                    children.append(winreg.EnumKey(key, i))
                except OSError:
                    break
                i += 1
        for child in children:
            _delete_tree(winreg, subkey + "\\" + child)
        winreg.DeleteKey(winreg.HKEY_CURRENT_USER, subkey)
        return True
    except FileNotFoundError:
        return False


if __name__ == "__main__" and os.name == "nt":          # python -m addin.service.rtd_com: register
    print("\n".join(install()))
