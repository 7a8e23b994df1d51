"""Where the service lives: the user's ibxl folder (the config file's folder, ``addin.config``).

``service.sock`` (the Unix domain socket; a named pipe on Windows, :func:`socket_path`),
``service.key`` (the authentication key, owner-only),
``service.pid`` and ``service.log``. ``$IBXL_SERVICE_DIR`` overrides the folder (tests; a short
path when the config folder's is too long for a socket, whose path is limited to about 100 bytes).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

__all__ = ["service_dir", "socket_path", "key_path", "pid_path", "log_path", "load_or_create_key", "KeyFileError"]


class KeyFileError(PermissionError):
    """The key file is readable by others or owned by another user: the service will not use it."""


def service_dir() -> Path:
    """The folder of the service's files (created owner-only when missing)."""
    env = os.environ.get("IBXL_SERVICE_DIR", "").strip()
    if env:
        folder = Path(env).expanduser()
    else:
        from ..config import config_path
        folder = config_path().parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def socket_path() -> Path | str:
    """The service's address: ``service.sock`` in :func:`service_dir` (Linux, macOS), or on Windows the
    named pipe ``ibxl-<user>-<folder hash>`` (one per user and folder)."""
    if os.name == "nt":
        import getpass
        import hashlib
        folder = hashlib.sha256(str(service_dir()).encode()).hexdigest()[:12]
        return f"\\\\.\\pipe\\ibxl-{getpass.getuser()}-{folder}"
    return service_dir() / "service.sock"


def key_path() -> Path:
    return service_dir() / "service.key"


def pid_path() -> Path:
    return service_dir() / "service.pid"


def log_path() -> Path:
    return service_dir() / "service.log"


def load_or_create_key(path: Path | None = None, create: bool = True) -> bytes:
    """The authentication key in ``path`` (default :func:`key_path`): 32 random bytes, hex, in a file
    created with mode 0600 on first use (O_EXCL: two first starts agree on one key). Raises
    KeyFileError when the file is open to group or others, or owned by another user;
    FileNotFoundError when missing and not ``create``."""
    path = Path(path) if path is not None else key_path()
    if create and not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass                                         # another process made it first: read theirs
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    info = path.stat()
    if os.name == "posix":
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"{path} is readable by other users (mode {stat.S_IMODE(info.st_mode):o}); "
                               f"run: chmod 600 {path}")
        if info.st_uid != os.getuid():
            raise KeyFileError(f"{path} belongs to another user")
    key = path.read_text().strip().encode()
    if len(key) < 32:
        raise KeyFileError(f"{path} does not hold a key; delete it and start the service again")
    return key
