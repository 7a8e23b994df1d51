"""Finding and starting the user's service: :func:`running` and :func:`start_detached`."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from . import paths

__all__ = ["running", "start_detached", "connect", "remote_runtime"]


def running() -> bool:
    """True when a service answers on the user's socket (its key accepted)."""
    from .client import ServiceClient
    try:
        ServiceClient(name="probe", timeout=5).close()
        return True
    except (OSError, EOFError, Exception):
        return False


def start_detached(args: tuple[str, ...] | list[str] = (), wait: float = 30.0) -> int:
    """Start ``python -m addin.service *args`` in its own session (it outlives the caller and its
    terminal), output appended to ``paths.log_path()``, and wait until it answers. Returns its pid.
    Raises RuntimeError when it exits or does not answer within ``wait`` s (the log tail says why)."""
    paths.load_or_create_key()                      # the key exists before the first client looks for it
    log = paths.log_path()
    # owner-only: the log names accounts and orders
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "addin.service", *args], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                env=os.environ.copy())
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if running():                   # another client started one first: this one stood down
                return proc.pid
            raise RuntimeError(f"the ibxl service exited with code {proc.returncode}; see {log}:\n" + _tail(log))
        if running():
            return proc.pid
        time.sleep(0.1)
    raise RuntimeError(f"the ibxl service did not answer within {wait:g} s; see {log}:\n" + _tail(log))


def _tail(path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def connect(cls=None, *, name: str = "", start: bool = True, args: tuple[str, ...] | list[str] = ()):
    """A client (``cls``, default ServiceClient; TradingClient for order entry) of the user's service,
    starting one detached first when none answers and ``start`` (the first workbook or script to
    look starts it, with the user's config). Raises as ``cls`` and :func:`start_detached`."""
    from .client import ServiceClient
    cls = cls or ServiceClient
    try:
        return cls(name=name)
    except (FileNotFoundError, ConnectionRefusedError):
        if not start:
            raise
    start_detached(list(args))
    return cls(name=name)


def remote_runtime(name: str = "", start: bool = True):
    """A RemoteRuntime of the user's service, starting the service first when none answers and
    ``start``. Raises as :func:`start_detached` and RemoteRuntime."""
    from .remote import RemoteRuntime
    try:
        return RemoteRuntime(name=name)
    except (FileNotFoundError, ConnectionRefusedError):
        if not start:
            raise
    start_detached()
    return RemoteRuntime(name=name)
