"""Test helpers: a real SMTP server (aiosmtpd) and Kinto apps with the plugin."""

import asyncio
import contextlib
import os
import socket
import ssl
import threading
import time
import unittest
import unittest.mock
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import transaction
from aiosmtpd.controller import Controller
from kinto import DEFAULT_SETTINGS as KINTO_DEFAULT_SETTINGS
from kinto import main as kinto_main
from kinto.core import scripts
from kinto.core.testing import BaseWebTest, get_user_headers
from kinto.events import ServerFlushed


HERE = os.path.dirname(__file__)
POSTGRESQL_URL = os.environ.get(
    "KINTO_EMAILER_TEST_DATABASE", "postgresql://postgres@127.0.0.1:5432/kinto_emailer_test"
)
IN_CI = os.environ.get("CI", "").lower() == "true"

# Waits end as soon as what they wait for happens: their bound only matters when a test
# fails, and worker processes took over 10 s to start on a loaded machine.
WAIT = 60.0


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]

    @property
    def text(self) -> str:
        """The whole text (the text part of an HTML mail), footer included."""
        return self.message.get_body(("plain",)).get_content().replace("\r\n", "\n")

    @property
    def body(self) -> str:
        """The text the hook rendered, without the footer of links."""
        return self.text.split("\n-- \n", 1)[0].strip()


@dataclass
class SMTPSink:
    """An SMTP server (on a free port unless told) that keeps what it accepts.

    ``refuse`` holds recipients answered with a permanent 550; ``defer`` counts, per
    recipient, the temporary 451 replies still to give; ``delay`` makes each message
    take that many seconds. ``attempts`` records when each recipient was tried.
    """

    port: int = field(default_factory=lambda: free_port())
    refuse: set[str] = field(default_factory=set)
    defer: dict[str, int] = field(default_factory=dict)
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    attempts: list[tuple[float, str]] = field(default_factory=list)
    ssl_context: ssl.SSLContext | None = None
    """TLS from the first byte (SMTPS, as on port 465)."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.under_way = self.most_under_way = 0
        """Messages being received at once (with a ``delay``), and the most so far."""
        self.controller = self._controller()

    def _controller(self) -> Controller:
        return Controller(self, hostname="127.0.0.1", port=self.port, ssl_context=self.ssl_context)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        self.attempts.append((time.monotonic(), address))
        if address in self.refuse:
            return "550 5.1.1 Mailbox unavailable"
        if self.defer.get(address, 0) > 0:
            self.defer[address] -= 1
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.delay:
            # One event loop: no lock needed to count the messages under way.
            self.under_way += 1
            self.most_under_way = max(self.most_under_way, self.under_way)
            await asyncio.sleep(self.delay)
            self.under_way -= 1
        with self._lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        return "250 Message accepted for delivery"

    def start(self) -> "SMTPSink":
        self.controller.start()
        self.running = True
        return self

    def stop(self) -> None:
        if getattr(self, "running", False):
            self.controller.stop()
            self.running = False

    def restart(self) -> None:
        """Listen again on the same port, as a server back from an outage."""
        self.stop()
        self.controller = self._controller()
        self.start()

    def clear(self) -> None:
        with self._lock:
            self.received.clear()
            self.attempts.clear()
            self.most_under_way = 0

    def wait_for(self, count: int, timeout: float = WAIT) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.01)
        return list(self.received)


class SilentServer:
    """A TCP server on ``port`` that accepts connections, counts them and never answers."""

    def __init__(self, port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.1)
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                self.connections.append(self.listener.accept()[0])
            except TimeoutError:
                pass

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self.listener.close()
        for connection in self.connections:
            connection.close()


def eventually(predicate: Any, timeout: float = WAIT) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgresql_available(url: str = POSTGRESQL_URL) -> bool:
    """True when the server of ``url`` answers; its database is created if missing."""
    import psycopg2

    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    database = url.rsplit("/", 1)[1]
    try:
        connection = psycopg2.connect(admin_url)
    except psycopg2.OperationalError:
        return False
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{database}"')
            # As Kinto recommends: timestamps are computed in UTC.
            cursor.execute(f"ALTER DATABASE \"{database}\" SET TIMEZONE TO 'UTC'")
    finally:
        connection.close()
    return True


def skip_unless_postgresql(cls: type) -> type:
    """PostgreSQL tests run in CI; elsewhere they are skipped when no server answers."""
    # Called first in any case: it creates the test database.
    if postgresql_available() or IN_CI:
        return cls
    return unittest.skip(f"no PostgreSQL at {POSTGRESQL_URL} (they run in CI)")(cls)


def write_config(
    directory: str,
    smtp_port: int,
    settings: Mapping[str, str] | None = None,
    includes: str = "kinto_emailer",
    postgresql: bool = False,
) -> str:
    """``tests/config/kinto.ini`` in ``directory``, with ``settings`` added (``emailer.x``
    for ``kinto.emailer.x``), on Kinto's PostgreSQL storage if asked; its path."""
    lines = [f"kinto.{key} = {value}" for key, value in (settings or {}).items()]
    with open(os.path.join(HERE, "config", "kinto.ini")) as f:
        text = f.read().replace("includes = kinto_emailer", f"includes = {includes}")
    if postgresql:
        text = text.replace("kinto.core.storage.memory", "kinto.core.storage.postgresql")
        lines.insert(0, f"kinto.storage_url = {POSTGRESQL_URL}")
    path = os.path.join(directory, "kinto.ini")
    with open(path, "w") as f:
        f.write(text.format(port=smtp_port, extra="\n".join(lines)))
    return path


def app_settings(smtp_port: int, **extra: Any) -> dict:
    """Kinto's defaults, memory backends, and kinto_emailer mailing 127.0.0.1:``smtp_port``."""
    return {
        **KINTO_DEFAULT_SETTINGS,
        "storage_backend": "kinto.core.storage.memory",
        "cache_backend": "kinto.core.cache.memory",
        "permission_backend": "kinto.core.permission.memory",
        "includes": "kinto_emailer",
        "multiauth.policies": "basicauth",
        "userid_hmac_secret": "a secret for the tests only",
        # Where the links of emails point: webtest's requests go to http://localhost.
        "emailer.public_url": "http://localhost/v1/",
        "bucket_create_principals": "system.Authenticated",
        "mail.host": "127.0.0.1",
        "mail.port": str(smtp_port),
        "mail.default_sender": "Kinto <kinto@example.com>",
        "project_name": "Kinto Test",
        **extra,
    }


def store_unchecked(
    registry: Any, resource_name: str, parent_id: str, object_id: str, obj: dict
) -> None:
    """Store ``obj`` as an earlier version, or other settings, let it be stored: with the
    backend's own method, past any check."""
    storage = registry.storage
    with transaction.manager:
        type(storage).update(
            storage,
            resource_name=resource_name,
            parent_id=parent_id,
            object_id=object_id,
            obj=obj,
        )


ALICE = get_user_headers("alice")
BOB = get_user_headers("bob")


class EmailerWebTest(BaseWebTest, unittest.TestCase):
    """Kinto with kinto_emailer in-process, mailing a real SMTP server."""

    api_prefix = "v1"
    entry_point = kinto_main
    extra_settings: dict[str, Any] = {}
    sink: SMTPSink

    @classmethod
    def setUpClass(cls) -> None:
        cls.sink = SMTPSink().start()
        super().setUpClass()
        cls.migrate()

    @classmethod
    def migrate(cls) -> None:
        """What `kinto migrate` does: Kinto's schemas, then the plugins' migrations."""
        scripts.migrate({"registry": cls.app.app.registry})

    def drop_queue(self, *tables: str) -> None:
        """The database as before `kinto migrate` made the queue's tables (or ``tables``)."""
        from kinto_emailer import jobs, migration

        queue = self.registry.emailer_delivery.queue
        with jobs.session(queue.dsn) as connection:
            jobs.execute(connection, f"DROP TABLE {', '.join(tables or jobs.TABLES)}")
            jobs.execute(
                connection,
                "DELETE FROM metadata WHERE name = %s",
                (f"{migration.NAME}_schema_version",),
            )

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        # Stops the app's worker: it must not take the jobs of the next test class.
        cls.app.app.registry.emailer_delivery.close(timeout=5)
        cls.sink.stop()

    @classmethod
    def get_app_settings(cls, extras: dict | None = None) -> dict:
        return app_settings(cls.sink.port, **{**cls.extra_settings, **(extras or {})})

    def setUp(self) -> None:
        super().setUp()
        self.headers = {**self.headers, **ALICE}
        self.sink.clear()
        self.sink.refuse.clear()
        self.sink.defer.clear()

    def tearDown(self) -> None:
        # Kinto's backends are flushed, then that is announced, as the flush endpoint does.
        super().tearDown()
        self.registry.notify(ServerFlushed(None))

    @property
    def registry(self) -> Any:
        return self.app.app.registry

    def mails(self) -> list[Received]:
        """What the SMTP server received, once everything committed so far was sent."""
        self.registry.emailer_delivery.join()
        return list(self.sink.received)

    def post_link(
        self, url: str, body: str = "List-Unsubscribe=One-Click", status: int = 200
    ) -> Any:
        """POST ``body`` as a form to ``url``, a link of an email (by default, what a mail
        client's one-click unsubscribe sends)."""
        return self.app.post(
            url.removeprefix("/v1"),
            body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            status=status,
        )

    def put_hooks(self, uri: str, *hooks: dict, status: int = 200) -> Any:
        """Save hooks; the mails that this write itself causes are left out of ``mails()``."""
        body = {"data": {"kinto-emailer": {"hooks": list(hooks)}}}
        response = self.app.put_json(uri, body, headers=self.headers, status=status)
        self.mails()
        self.sink.clear()
        return response

    def create_collection(self) -> None:
        """The bucket ``b`` and its collection ``c``, where most tests write."""
        self.app.put_json("/buckets/b", headers=self.headers)
        self.app.put_json("/buckets/b/collections/c", headers=self.headers)

    def create_record(self, uri: str, data: dict | None = None, status: int = 201) -> Any:
        return self.app.post_json(uri, {"data": data or {}}, headers=self.headers, status=status)


@contextlib.contextmanager
def sender_held_after_reading_preferences() -> Iterator[tuple[threading.Event, threading.Event]]:
    """``(read, release)``: what sends mail (not the test's own thread), once it read
    preferences the first time, sets ``read`` and waits for ``release``: the test changes
    preferences in between."""
    from kinto_emailer.preferences import PreferenceStore

    read, release = threading.Event(), threading.Event()
    read_many = PreferenceStore.read_many

    def read_then_wait(store: Any, keys: Any) -> Any:
        found = read_many(store, keys)
        if threading.current_thread() is not threading.main_thread() and not read.is_set():
            read.set()
            release.wait(10)
        return found

    with unittest.mock.patch.object(PreferenceStore, "read_many", read_then_wait):
        yield read, release
