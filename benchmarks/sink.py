"""An SMTP server in a process of its own, as a real one is, that counts what it accepts.

The delivery rows compare the plugin with plain smtplib against it: in the benchmark's
own process, the server would share one interpreter lock with whoever sends to it.
"""

import multiprocessing
import threading
import time
from typing import Any

from aiosmtpd.controller import Controller

from tests.support import free_port


class _Counter:
    def __init__(self, count: Any) -> None:
        self.count = count

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.count.get_lock():
            self.count.value += 1
        return "250 Message accepted for delivery"


def _serve(port: int, count: Any, ready: Any) -> None:
    Controller(_Counter(count), hostname="127.0.0.1", port=port).start()
    ready.set()
    threading.Event().wait()


class CountingSink:
    """The server, started in a process of its own; ``port`` is where it listens."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.port = free_port()
        self._count = context.Value("q", 0)
        ready = context.Event()
        self._process = context.Process(
            target=_serve, args=(self.port, self._count, ready), daemon=True
        )
        self._process.start()
        if not ready.wait(60):
            raise RuntimeError("The counting SMTP server did not start")

    @property
    def count(self) -> int:
        return int(self._count.value)

    def clear(self) -> None:
        with self._count.get_lock():
            self._count.value = 0

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.count} messages of {count} arrived in {timeout}s")
            time.sleep(0.002)

    def stop(self) -> None:
        self._process.terminate()
        self._process.join()
