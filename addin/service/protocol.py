"""The service's message schema, version :data:`VERSION`: JSON objects, one per transport message.

Three kinds of message::

    request  {"v": 1, "id": 7, "method": "quote", "params": {...}}          client -> service
    reply    {"v": 1, "id": 7, "ok": true,  "result": ...}                   service -> client
             {"v": 1, "id": 7, "ok": false, "error": {"code": "...", "message": "...", "ib_code": 326}}
    push     {"v": 1, "topic": "quotes", "version": 1234, "data": {...}}     service -> client
    callback {"v": 1, "callback": 3, "id": 7, "method": "write_refs", "params": {...}}   service -> client
             {"v": 1, "callback": 3, "ok": true, "result": null}         client -> service (or "error")

``id`` is the client's integer, echoed in the reply. ``ib_code`` is present only for IB's errors.
A callback asks the client something while request ``id`` runs (``place_orders`` asks it to write
the Refs it assigned into the workbook, and save, before any order is sent); the client answers it
on the thread that made the request, and the request goes on once the answer arrives.
Pushes: topic ``quotes`` (data: board key -> the quote's raw fields: bid, ask, last, sizes, volume,
open/high/low/close, ``updated`` and ``last_time`` as epoch seconds, data_type, error, notice, stale;
the lines this client holds; the client derives mid, spread and change) and, for
trading connections, topic ``orders`` (data: Ref -> the desk's outputs, the Orders columns); to every
connection, topic ``session`` (data: ``{"user_disconnected": bool}``) when a user disconnects or connects.
A push carries ``version``: the service's board version it is current to; pushes of one topic
replace (merge over) earlier ones, so a slow client never needs the ones it missed.

Values beyond JSON are tagged objects: a datetime is ``{"$dt": "<ISO 8601, UTC>"}``; a table
(pandas DataFrame) is ``{"$frame": {"columns": [...], "data": [[...], ...], "index": [...], "index_name": str
or null}}`` (the index is kept: History's bars are indexed by time, the order table by Ref). Floats NaN and
infinity are written as JSON's common extensions (NaN, Infinity), as Python's json reads them.

The first request on a connection must be ``hello`` (params ``{"capabilities": ["read"] or
["read", "trading"], "name": str, "pid": int}``). A message of any other ``v`` is answered with
error code ``version_mismatch`` naming both versions, and the connection is closed.

Never pickle: only :func:`encode` / :func:`decode` cross the socket.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

__all__ = ["VERSION", "MalformedMessage", "ServiceError", "VersionMismatch", "encode", "decode", "request",
           "reply_ok", "reply_error", "push", "callback", "callback_reply", "check_version", "parse_request",
           "error_of",
           "BAD_REQUEST", "UNKNOWN_METHOD", "NOT_PERMITTED", "VERSION_MISMATCH", "IB_ERROR", "FAILED",
           "DISCONNECTED", "NOT_FOUND"]

VERSION = 1

# Error codes (reply error.code).
BAD_REQUEST = "bad_request"            # not a request of this schema (missing keys, wrong types)
UNKNOWN_METHOD = "unknown_method"
NOT_PERMITTED = "not_permitted"        # e.g. an order method on a read-only connection
VERSION_MISMATCH = "version_mismatch"
IB_ERROR = "ib_error"                  # IB refused or failed; error.ib_code holds IB's code
DISCONNECTED = "disconnected"          # the user disconnected the service; nothing reconnects until connect
NOT_FOUND = "not_found"                # e.g. an unknown order Ref
FAILED = "failed"                      # anything else (a ValueError's message, a timeout, ...)


class ServiceError(Exception):
    """An error reply: ``code`` (one of the codes above), message, ``ib_code`` (IB's code or None)."""

    def __init__(self, code: str, message: str, ib_code: int | None = None):
        super().__init__(message)
        self.code, self.message, self.ib_code = code, message, ib_code

    def __str__(self) -> str:
        return f"IB {self.ib_code}: {self.message}" if self.ib_code is not None else self.message

    def cell_text(self) -> str:
        """What a worksheet cell shows: ``#IB <code>: <text>`` for IB's errors, else ``#IBXL: <message>``."""
        return f"#IB {self.ib_code}: {self.message}" if self.ib_code is not None else f"#IBXL: {self.message}"


class MalformedMessage(ServiceError):
    """A message that does not follow this schema."""

    def __init__(self, message: str):
        super().__init__(BAD_REQUEST, message)


class VersionMismatch(ServiceError):
    """The other side speaks another schema version."""

    def __init__(self, theirs: Any):
        super().__init__(VERSION_MISMATCH, f"ibxl service protocol mismatch: this side speaks v{VERSION}, the "
                                           f"other v{theirs}; restart the service with the same ibxl version "
                                           f"(`ibxl service stop`, then `ibxl service start`)")


# --- encoding --------------------------------------------------------------------------------------------
def _tagged(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return {"$dt": value.astimezone(UTC).isoformat()}
    if isinstance(value, date):
        return {"$dt": datetime(value.year, value.month, value.day, tzinfo=UTC).isoformat()}
    if hasattr(value, "to_dict") and hasattr(value, "columns"):          # a pandas DataFrame
        split = value.to_dict(orient="split")
        name = value.index.name
        return {"$frame": {"columns": [str(c) for c in split["columns"]], "data": split["data"],
                           "index": split["index"], "index_name": None if name is None else str(name)}}
    if hasattr(value, "item"):                                           # numpy / pandas scalars
        return value.item()
    if hasattr(value, "isoformat"):                                      # pandas Timestamp is a datetime
        return _tagged(datetime.fromisoformat(value.isoformat()))
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot send a {type(value).__name__} over the service protocol")


def _untag(obj: dict) -> Any:
    if len(obj) == 1:
        if "$dt" in obj:
            return datetime.fromisoformat(obj["$dt"])
        if "$frame" in obj:
            import pandas as pd
            frame = obj["$frame"]
            index = frame.get("index")
            index = None if index is None else pd.Index(index, name=frame.get("index_name"))
            return pd.DataFrame(frame["data"], columns=frame["columns"], index=index)
    return obj


def _nat_to_none(value: Any) -> Any:
    # pandas NaT is a datetime subclass that has no isoformat: send None
    return None if value is not None and type(value).__name__ == "NaTType" else value


def encode(message: dict) -> bytes:
    """One message as UTF-8 JSON bytes. Raises TypeError for a value the schema cannot carry."""
    def default(value):
        value = _nat_to_none(value)
        return None if value is None else _tagged(value)
    return json.dumps(message, default=default, separators=(",", ":")).encode()


def decode(data: bytes) -> dict:
    """The message in ``data``. Raises MalformedMessage when it is not a JSON object."""
    try:
        # only a message carrying a tagged value needs the (per-object) hook; quote pushes never do
        message = json.loads(data, object_hook=_untag) if b'"$' in data else json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"not a JSON message: {exc}") from None
    if not isinstance(message, dict):
        raise MalformedMessage("a message must be a JSON object")
    return message


def check_version(message: dict) -> None:
    """Raise VersionMismatch unless ``message["v"]`` is :data:`VERSION`."""
    if message.get("v") != VERSION:
        raise VersionMismatch(message.get("v"))


# --- constructors ----------------------------------------------------------------------------------------
def request(id: int, method: str, params: dict | None = None) -> dict:
    return {"v": VERSION, "id": id, "method": method, "params": params or {}}


def reply_ok(id: int | None, result: Any = None) -> dict:
    return {"v": VERSION, "id": id, "ok": True, "result": result}


def reply_error(id: int | None, code: str, message: str, ib_code: int | None = None) -> dict:
    error: dict[str, Any] = {"code": code, "message": message}
    if ib_code is not None:
        error["ib_code"] = ib_code
    return {"v": VERSION, "id": id, "ok": False, "error": error}


def push(topic: str, version: int, data: Any) -> dict:
    return {"v": VERSION, "topic": topic, "version": version, "data": data}


def callback(cid: int, id: int, method: str, params: dict | None = None) -> dict:
    return {"v": VERSION, "callback": cid, "id": id, "method": method, "params": params or {}}


def callback_reply(cid: int, error: str | None = None) -> dict:
    if error is None:
        return {"v": VERSION, "callback": cid, "ok": True, "result": None}
    return {"v": VERSION, "callback": cid, "ok": False, "error": {"code": FAILED, "message": error}}


def parse_request(message: dict) -> tuple[int, str, dict]:
    """``(id, method, params)`` of a request. Raises VersionMismatch, MalformedMessage."""
    check_version(message)
    id, method, params = message.get("id"), message.get("method"), message.get("params", {})
    if not isinstance(id, int) or not isinstance(method, str) or not isinstance(params, dict):
        raise MalformedMessage("a request needs an integer id, a method name and a params object")
    return id, method, params


def error_of(reply: dict) -> ServiceError:
    """The ServiceError an error reply carries."""
    err = reply.get("error") or {}
    return ServiceError(err.get("code", FAILED), err.get("message", "unknown error"), err.get("ib_code"))

