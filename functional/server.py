"""``kinto`` commands as an operator runs them, and ``kinto start`` until it answers."""

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping

import requests

from tests.support import free_port


BIN = os.path.dirname(sys.executable)


def kinto(
    *args: str, config: str, env: Mapping[str, str], cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``kinto ARGS --ini CONFIG``, which must succeed."""
    return subprocess.run(
        [os.path.join(BIN, "kinto"), *args, "--ini", config],
        env=env,
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )


@contextlib.contextmanager
def running_kinto(
    config: str, env: Mapping[str, str], log: str, cwd: str | None = None, timeout: float = 30
) -> Iterator[str]:
    """``kinto start`` on a free port, its output in ``log``; yields its ``/v1`` URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [os.path.join(BIN, "kinto"), "start", "--ini", config, "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_up(server, url, log, timeout)
            yield url
        finally:
            server.terminate()
            server.wait(10)


def _wait_until_up(server: subprocess.Popen[bytes], url: str, log: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    # A server that stopped at startup fails the wait at once, its reason in the error.
    while server.poll() is None and time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/", timeout=1).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    with open(log, errors="replace") as output:
        tail = output.read()[-2000:]
    raise RuntimeError(f"Kinto did not start (see {log}):\n{tail}")
