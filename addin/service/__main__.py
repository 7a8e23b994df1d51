"""The service process: ``python -m addin.service [--host H --port P --client-id N]``.

Connection settings default to the user's config file (``addin.config``); the socket, key, pid and
log files are in ``paths.service_dir()``. Runs until SIGTERM / SIGINT or a client's ``shutdown``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal

from . import paths
from .server import ServiceServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m addin.service", description=__doc__.splitlines()[0])
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--client-id", type=int)
    parser.add_argument("--max-lines", type=int, default=100)
    parser.add_argument("--no-connect", action="store_true", help="Do not connect to IB at start.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def runtime_factory():
        from ..app.runtime import Runtime, _default_connection
        options = _default_connection()
        for name in ("host", "port", "client_id"):
            if getattr(args, name) is not None:
                options[name] = getattr(args, name)
        return Runtime(max_lines=args.max_lines, **options)

    server = ServiceServer(runtime_factory, paths.socket_path(), paths.load_or_create_key(),
                           autoconnect=not args.no_connect)
    signal.signal(signal.SIGTERM, lambda *_: server._stopped.set())
    signal.signal(signal.SIGINT, lambda *_: server._stopped.set())
    server.start()
    pid_file = paths.pid_path()
    pid_file.write_text(str(os.getpid()))
    logging.getLogger(__name__).info("ibxl service pid %d listening on %s", os.getpid(), server.address)
    try:
        server.serve_forever()
    finally:
        if pid_file.exists() and pid_file.read_text().strip() == str(os.getpid()):
            pid_file.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
