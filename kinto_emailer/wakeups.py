"""Waking the PostgreSQL workers when changes or messages were queued.

Workers LISTEN on :data:`CHANNEL`. A process that queued something sends one NOTIFY once
its transaction committed, on a connection of its own: a NOTIFY inside the writers'
transactions made every commit of the database wait for the others (PostgreSQL holds a
lock of its notification queue from the NOTIFY to the end of the commit). Under load, a
process sends at most one NOTIFY every :data:`WAKE_INTERVAL`, whatever the number of
commits: a worker, once awake, takes everything queued until then. Workers also poll, so
a NOTIFY lost (the process stopped, the database was unreachable) only delays the mail.
"""

import logging
import os
import threading
from typing import Any

import psycopg2
import transaction


logger = logging.getLogger(__name__)

CHANNEL = "kinto_emailer_jobs"
WAKE_INTERVAL = 0.5
"""Seconds between two NOTIFYs of one process: a wake-up asked for meanwhile waits (at
most this long) and is sent with the others. A worker busy with earlier mail takes new
mail without one: only mail queued right after a worker went idle waits for it."""


def connect(dsn: str, autocommit: bool = True) -> Any:
    """A psycopg2 connection (Kinto's own PostgreSQL driver)."""
    connection = psycopg2.connect(dsn)
    connection.autocommit = autocommit
    return connection


class Waker:
    """Sends the NOTIFYs of one process, from a thread of its own."""

    def __init__(self, dsn: str, interval: float = WAKE_INTERVAL) -> None:
        self.dsn = dsn
        self.interval = interval
        self._condition = threading.Condition()
        self._asked = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._connection: Any = None
        # The connections of a parent process: closing them from a child would end the
        # parent's sessions.
        self._inherited: list[Any] = []

    def after_commit(self) -> None:
        """Wake the workers once the current transaction committed (once however many
        things it queued)."""
        current = transaction.get()
        try:
            current.data(self)
        except KeyError:
            current.set_data(self, True)
            current.addAfterCommitHook(self._committed)

    def _committed(self, committed: bool) -> None:
        if committed:
            self.wake()

    def wake(self) -> None:
        """Ask for a NOTIFY: now if none was sent in the last interval, else at its end."""
        with self._condition:
            self._asked = True
            self._condition.notify()
            self._forget_parent()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="kinto-emailer-waker", daemon=True
                )
                self._thread.start()

    def _forget_parent(self) -> None:
        """In a forked process, the parent's thread and connection are not ours."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._thread = None
            if self._connection is not None:
                self._inherited.append(self._connection)
                self._connection = None

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._asked or self._closed)
                if self._closed:
                    return
                self._asked = False
            self._notify()
            with self._condition:
                if self._condition.wait_for(lambda: self._closed, timeout=self.interval):
                    return

    def _notify(self) -> None:
        try:
            if self._connection is None:
                self._connection = connect(self.dsn)
            with self._connection.cursor() as cursor:
                cursor.execute(f"NOTIFY {CHANNEL}")
        except psycopg2.Error as e:
            logger.warning("Could not wake the mail workers (they poll instead): %s", e)
            self._disconnect()

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def close(self) -> None:
        """Send the NOTIFY still asked for, then stop (a later wake-up starts again)."""
        with self._condition:
            self._forget_parent()
            self._closed = True
            self._condition.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
            if self._asked:
                self._notify()
        self._disconnect()
        with self._condition:
            self._asked = self._closed = False
            self._thread = None
