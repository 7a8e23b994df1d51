"""What makes two Refs, two claims and two sheet rows the same: the pieces of "never sent twice" that
the journal, the reconcile and the desk all compare with.

- :func:`ref_key`: a Ref's identity. Refs are ASCII (``addin.orders.rows``), so trimmed and upper-cased
  they compare as IB's users mean them: ``caseref`` is ``CASEREF``. A bracket child ``R.TP`` / ``R.SL``
  belongs to ``R`` (:func:`parent_key`).
- :class:`Owner`: who claimed a Ref for sending (host, pid, API client id, a random nonce per desk).
  The journal moves a Ref out of ``intent_written`` only for the owner that wrote the intent; a
  ``transmitting`` Ref whose owner is a dead process on this host may be judged by the reconcile.
- :func:`row_identity`: a blank-Ref row's identity (source, row label, a fingerprint of its order
  fields), recorded with the Ref assigned to it so a row that comes back blank after a crash is
  recognised.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import sys
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ref_key", "parent_key", "Owner", "process_alive", "row_identity"]

_CHILD_SUFFIXES = (".TP", ".SL")


def ref_key(ref: Any) -> str:
    """A Ref as compared everywhere: trimmed, upper case (Refs are ASCII). ``None`` -> ``""``."""
    return "" if ref is None else str(ref).strip().upper()


def parent_key(ref: Any) -> str:
    """The key of the order a Ref belongs to: ``r1.tp`` -> ``R1``; a Ref without a child suffix -> its key."""
    key = ref_key(ref)
    for suffix in _CHILD_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)]
    return key


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine. Errs on "alive" when it cannot tell (a
    live owner's claim must never be taken away)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":          # os.kill(pid, 0) would send CTRL_C_EVENT there
        import ctypes
        kernel32 = ctypes.windll.kernel32    # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)      # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5                # access denied: it exists
        try:
            code = ctypes.c_ulong()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == 259                           # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:              # someone else's process: it exists
        return True
    except OSError:
        return True
    return True


@dataclass(frozen=True)
class Owner:
    """Who claims Refs: this machine, this process, its API client id, and a nonce per desk (two desks
    in one process never share a claim). ``token`` is what the journal stores."""

    host: str
    pid: int
    client_id: int
    nonce: str

    @classmethod
    def new(cls, client_id: int) -> "Owner":
        return cls(socket.gethostname(), os.getpid(), int(client_id), secrets.token_hex(8))

    @property
    def token(self) -> str:
        return json.dumps([self.host, self.pid, self.client_id, self.nonce])

    @classmethod
    def parse(cls, token: str | None) -> "Owner | None":
        """The Owner of a stored token (None for none, or one this version cannot read)."""
        if not token:
            return None
        try:
            host, pid, client_id, nonce = json.loads(token)
            return cls(str(host), int(pid), int(client_id), str(nonce))
        except (ValueError, TypeError):
            return None

    def describe(self) -> str:
        """``pid P, client id C`` (and the host when it is another machine's)."""
        where = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"pid {self.pid}{where}, client id {self.client_id}"

    def gone(self) -> bool:
        """True only when this owner's process is known to have ended (same host, pid not running)."""
        return self.host == socket.gethostname() and not process_alive(self.pid)

    def same_process(self, other: "Owner") -> bool:
        return self.host == other.host and self.pid == other.pid


def row_identity(source: str, row: Hashable, fields: Mapping[str, Any]) -> str:
    """A blank-Ref row's identity: ``source`` (sheet or Table name, "" when unknown), the row's label
    (a worksheet row number for the Excel side) and a SHA-256 fingerprint of its order fields other
    than the Ref (as parsed: ``buy`` and ``BUY`` are one row). Returns ``source|row|hex``."""
    content = {k: v for k, v in fields.items() if k not in ("ref", "row")}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
    return f"{source}|{row}|{digest}"
