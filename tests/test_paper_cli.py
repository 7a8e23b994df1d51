"""``ibxl paper`` as a new user runs it: the installed console script, a real port, Ctrl-C to stop."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from addin.paper import PaperProcess

from .ibclient import IBTestClient


def ibxl_command() -> list[str]:
    exe = shutil.which("ibxl") or str(Path(sys.executable).with_name("ibxl"))
    if not os.path.exists(exe):
        pytest.fail("the ibxl console script is not installed: run the README's install step")
    return [exe]


def test_ibxl_paper_serves_until_interrupted():
    proc = subprocess.Popen(ibxl_command() + ["paper", "--port", "0", "--accounts", "DU111,DU222"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        ib = IBTestClient().start(port, 3)
        assert ib.wait_for("managedAccounts")[0] == "DU111,DU222"
        ib.stop()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ibxl_paper_refuses_a_public_bind_and_live_accounts():
    r = subprocess.run(ibxl_command() + ["paper", "--host", "0.0.0.0", "--port", "0"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "loopback" in r.stderr
    r = subprocess.run(ibxl_command() + ["paper", "--port", "0", "--accounts", "U123"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "DU" in r.stderr


def test_paper_process_starts_on_a_free_port_and_stops_cleanly():
    with PaperProcess("--seed", "7") as gw:
        ib = IBTestClient().start(gw.port, 1)
        ib.reqCurrentTime()
        ib.wait_for("currentTime")
        ib.stop()
    assert gw.proc.returncode == 0
