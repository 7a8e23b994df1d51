"""The wire: ``multiprocessing.connection`` over a Unix domain socket on Linux and macOS, a named
pipe (``AF_PIPE``) on Windows, never a TCP port; its HMAC challenge with the
user's key, and :mod:`protocol`'s JSON bytes as the message (``send_bytes`` / ``recv_bytes``; nothing
is ever pickled).

On Windows a named pipe is reachable by name from any local session and its default access list lets
others open it, so there the key (in the user's profile, readable by the user alone) is what keeps
other users out: without it the HMAC challenge fails before any message is read.
"""

from __future__ import annotations

import os
import socket
import threading
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path

from . import protocol

__all__ = ["listen", "dial", "authenticate", "is_pipe", "Channel", "AuthenticationError", "AUTH_TIMEOUT"]

from multiprocessing import AuthenticationError  # noqa: E402  (re-exported: a wrong key)

PIPE_PREFIX = "\\\\.\\pipe\\"


def is_pipe(address: str | os.PathLike) -> bool:
    """Whether ``address`` names a Windows named pipe (else it is a Unix socket file)."""
    return str(address).startswith(PIPE_PREFIX)


def _family(address: str) -> str:
    return "AF_PIPE" if is_pipe(address) else "AF_UNIX"


AUTH_TIMEOUT = 5.0      # seconds either side has to complete the key challenge before the connection is closed


def listen(address: str | os.PathLike, authkey: bytes) -> Listener:
    """A Listener on ``address``: a named pipe (Windows), or a socket file created owner-only (mode
    0600, umask 077 while the socket is made so there is no moment it is open to others). A stale
    socket file from a dead service is removed first; raises OSError when a live service holds it.
    Its ``accept()`` does not authenticate: the server calls :func:`authenticate` on the connection's
    own thread, so a peer that connects and never answers holds up no one else."""
    address = str(address)
    if is_pipe(address):
        return Listener(address, family="AF_PIPE")
    if Path(address).exists():
        try:
            dial(address, authkey).close()
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(address)                               # nobody listens: left by a dead service
        except Exception:
            raise OSError(f"an ibxl service already listens on {address}") from None
        else:
            raise OSError(f"an ibxl service already listens on {address}")
    old = os.umask(0o077)
    try:
        listener = Listener(address, family="AF_UNIX")
    finally:
        os.umask(old)
    os.chmod(address, 0o600)
    return listener


def dial(address: str | os.PathLike, authkey: bytes, timeout: float = AUTH_TIMEOUT) -> Connection:
    """An authenticated connection to the service at ``address``. Raises FileNotFoundError /
    ConnectionRefusedError when no service listens, AuthenticationError for a wrong key or a service
    that does not complete the challenge within ``timeout`` s (a hung service must not hang Excel)."""
    address = str(address)
    conn = Client(address, family=_family(address))
    authenticate(conn, authkey, server=False, timeout=timeout)
    return conn


def authenticate(conn: Connection, authkey: bytes, *, server: bool, timeout: float = AUTH_TIMEOUT) -> None:
    """``multiprocessing.connection``'s HMAC challenge both ways (the server challenges first), with a
    watchdog that shuts the connection down when the peer has not finished within ``timeout`` s.
    Raises AuthenticationError (wrong key, or no answer in time); the connection is then closed."""
    from multiprocessing.connection import answer_challenge, deliver_challenge
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _shutdown(conn)

    watchdog = threading.Timer(timeout, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        if server:
            deliver_challenge(conn, authkey)
            answer_challenge(conn, authkey)
        else:
            answer_challenge(conn, authkey)
            deliver_challenge(conn, authkey)
    except (EOFError, OSError) as exc:
        _close(conn)
        if expired.is_set():
            raise AuthenticationError(f"the key challenge was not completed within {timeout:g} s") from None
        raise AuthenticationError(f"the connection ended during the key challenge: {exc}") from None
    except AuthenticationError:
        _close(conn)
        raise
    finally:
        watchdog.cancel()


def wake(address: str | os.PathLike) -> None:
    """Connect to ``address`` and hang up at once: a thread blocked in the Listener's accept() returns
    (closing a listening socket does not wake it)."""
    try:
        Client(str(address), family=_family(str(address))).close()
    except OSError:
        pass                                             # nobody listens any more: nothing to wake


def _shutdown(conn: Connection) -> None:
    """Shut the socket down (a thread blocked in recv wakes with EOFError), or close a named pipe."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as s:
            s.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError, TypeError):
        _close(conn)                                     # a named pipe (no shutdown), or already closed


def _close(conn: Connection) -> None:
    try:
        conn.close()
    except OSError:
        pass


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
        _shutdown(self.conn)

    def release(self) -> None:
        """Close the handle (the reader thread calls this once it saw EOF)."""
        _close(self.conn)
