"""A recording test client built on the official ibapi EClient/EWrapper.

Every EWrapper callback is recorded as ``Event(name, args)``; tests wait on events with timeouts
(a condition variable, never sleeps). This is test scaffolding for the paper gateway; the product's
own client is ``addin.ib.session``.
"""

from __future__ import annotations

import inspect
import threading
import time
from dataclasses import dataclass

from ibapi.client import EClient
from ibapi.wrapper import EWrapper


@dataclass
class Event:
    name: str
    args: tuple

    def __getitem__(self, i):
        return self.args[i]


class Recorder(EWrapper):
    def __init__(self):
        super().__init__()
        self.events: list[Event] = []
        self.cond = threading.Condition()

    def _record(self, name, args):
        with self.cond:
            self.events.append(Event(name, args))
            self.cond.notify_all()

    def wait_for(self, name: str, pred=lambda e: True, timeout: float = 10.0, start: int = 0) -> Event:
        """The first event called ``name`` (from index ``start``) satisfying ``pred``; raises on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events[start:]:
                    if e.name == name and pred(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    recent = [(e.name, e.args) for e in self.events[-15:]]
                    raise TimeoutError(f"no {name} event within {timeout} s; last events: {recent}")
                self.cond.wait(left)

    def collect(self, name: str, until: str, req_id=None, timeout: float = 10.0, start: int = 0) -> list[Event]:
        """Events called ``name`` (optionally for ``req_id`` as first arg) up to the first ``until``."""
        pred = (lambda e: True) if req_id is None else (lambda e: e.args and e.args[0] == req_id)
        end = self.wait_for(until, pred, timeout, start)
        with self.cond:
            stop = self.events.index(end)
            return [e for e in self.events[start:stop] if e.name == name and pred(e)]

    def errors(self, req_id=None) -> list[Event]:
        with self.cond:
            return [e for e in self.events if e.name == "error" and (req_id is None or e.args[0] == req_id)]

    def wait_error(self, req_id: int, code: int | None = None, timeout: float = 10.0) -> Event:
        return self.wait_for("error", lambda e: e.args[0] == req_id and (code is None or e.args[2] == code),
                             timeout)

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def names(self, start: int = 0) -> list[str]:
        with self.cond:
            return [e.name for e in self.events[start:]]


def _recording(name):
    def method(self, *args, **kwargs):
        self._record(name, args + tuple(kwargs.values()))
    method.__name__ = name
    return method


for _name, _fn in inspect.getmembers(EWrapper, inspect.isfunction):
    if not _name.startswith("_") and _name not in ("logAnswer",) and not _name.endswith("ProtoBuf"):
        setattr(Recorder, _name, _recording(_name))


class IBTestClient(Recorder, EClient):
    """``connect`` starts ibapi's reader and message loop and waits for nextValidId and managedAccounts."""

    def __init__(self):
        Recorder.__init__(self)
        EClient.__init__(self, self)
        self.thread: threading.Thread | None = None
        self._stopping = False
        self._req = 1000

    def start(self, port: int, client_id: int = 1, timeout: float = 10.0) -> "IBTestClient":
        self.connect("127.0.0.1", port, client_id)
        if not self.isConnected():
            raise ConnectionError(f"could not connect to 127.0.0.1:{port}")
        self.thread = threading.Thread(target=self._run_until_closed, name=f"ibapi-{client_id}", daemon=True)
        self.thread.start()
        self.wait_for("nextValidId", timeout=timeout)
        self.wait_for("managedAccounts", timeout=timeout)
        return self

    def _run_until_closed(self) -> None:
        # After stop() ibapi's run() may decode one more queued message with serverVersion() None
        # and raise TypeError: the connection's end, not a test failure. Anything else is raised.
        try:
            self.run()
        except TypeError:
            if not self._stopping:
                raise

    def stop(self) -> None:
        self._stopping = True
        try:
            self.disconnect()
        except AttributeError:      # ibapi's own race: its reader thread set conn to None between check and use
            pass
        if self.thread is not None:
            self.thread.join(10)

    def next_req(self) -> int:
        self._req += 1
        return self._req

    def next_order_id(self) -> int:
        ids = [e.args[0] for e in self.events if e.name == "nextValidId"]
        nid = max(ids)
        # consume: later calls get increasing ids without asking the server
        used = getattr(self, "_used_ids", nid - 1)
        self._used_ids = max(used + 1, nid)
        return self._used_ids
