"""The wire: ``multiprocessing.connection`` over a Unix domain socket (never a TCP port), its HMAC
challenge with the user's key, and :mod:`protocol`'s JSON bytes as the message (``send_bytes`` /
``recv_bytes``; nothing is ever pickled).

Windows (a named pipe, ``AF_PIPE``) is not done yet: :func:`listen` and :func:`dial` raise there.
"""

from __future__ import annotations

import os
import socket
import threading
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path

from . import protocol

__all__ = ["listen", "dial", "Channel", "AuthenticationError"]

from multiprocessing import AuthenticationError  # noqa: E402  (re-exported: a wrong key)


def _require_unix() -> None:
    if os.name != "posix":
        raise NotImplementedError("the ibxl service needs a Unix domain socket; named pipes (Windows) come later")


def listen(address: str | os.PathLike, authkey: bytes) -> Listener:
    """A Listener on the socket file ``address``, created owner-only (mode 0600, umask 077 while the
    socket is made so there is no moment it is open to others). A stale socket file from a dead
    service is removed first; raises OSError when a live service holds it."""
    _require_unix()
    address = str(address)
    if Path(address).exists():
        try:
            Client(address, family="AF_UNIX", authkey=authkey).close()
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(address)                               # nobody listens: left by a dead service
        except Exception:
            raise OSError(f"an ibxl service already listens on {address}") from None
        else:
            raise OSError(f"an ibxl service already listens on {address}")
    old = os.umask(0o077)
    try:
        listener = Listener(address, family="AF_UNIX", authkey=authkey)
    finally:
        os.umask(old)
    os.chmod(address, 0o600)
    return listener


def dial(address: str | os.PathLike, authkey: bytes) -> Connection:
    """A connection to the service at ``address``. Raises FileNotFoundError / ConnectionRefusedError when no
    service listens, AuthenticationError for a wrong key."""
    _require_unix()
    return Client(str(address), family="AF_UNIX", authkey=authkey)


class Channel:
    """One connection carrying protocol messages; ``send`` is safe from several threads (replies and
    pushes share the socket), ``recv`` belongs to one reader thread."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._send_lock = threading.Lock()

    def send(self, message: dict) -> None:
        """Raises OSError / EOFError when the other side is gone."""
        data = protocol.encode(message)
        with self._send_lock:
            self.conn.send_bytes(data)

    def recv(self) -> dict:
        """The next message. Raises EOFError / OSError when the other side is gone, MalformedMessage for junk."""
        return protocol.decode(self.conn.recv_bytes())

    def close(self) -> None:
        """Shut the socket down (a thread blocked in recv wakes with EOFError), then close it."""
        try:
            with socket.socket(fileno=os.dup(self.conn.fileno())) as s:
                s.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError, TypeError):
            pass                                         # already closed

    def release(self) -> None:
        """Close the handle (the reader thread calls this once it saw EOF)."""
        try:
            self.conn.close()
        except OSError:
            pass
