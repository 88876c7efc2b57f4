"""Delivery: when and how messages leave the process.

Drafts are rendered inside the client's transaction and handed over only once it
commits, so a rolled-back change mails nobody. A background thread (:class:`Outbox`)
builds and sends them: no client request waits on the SMTP server.
With ``mail.queue_path``, messages go to the Maildir queue within the transaction
itself (repoze.sendmail writes them on commit and discards them on abort).
"""

import logging
import os
import queue
import smtplib
import ssl
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Protocol

import transaction
from pyramid.exceptions import ConfigurationError
from pyramid_mailer.mailer import Mailer
from repoze.sendmail.delivery import QueuedMailDelivery

from kinto_emailer.messages import Draft, Outgoing, build
from kinto_emailer.settings import EmailerSettings


logger = logging.getLogger(__name__)


Failure = tuple[Outgoing, str]
"""A message that was not sent, and why."""


class Transport(Protocol):
    def send(self, messages: Sequence[Outgoing]) -> list[Failure]:
        """Send ``messages``; return those that were not sent (their errors are logged)."""


class SMTPTransport:
    """Talks SMTP with the ``mail.*`` settings of pyramid_mailer, one connection per batch."""

    def __init__(self, mailer: Mailer, timeout: float) -> None:
        self.smtp = mailer.smtp_mailer
        self.timeout = timeout

    def connect(self) -> smtplib.SMTP:
        smtp = self.smtp
        if smtp.ssl:
            context = ssl.create_default_context()
            certfile = getattr(smtp, "certfile", None)
            if certfile:
                context.load_cert_chain(certfile, getattr(smtp, "keyfile", None))
            connection: smtplib.SMTP = smtplib.SMTP_SSL(
                smtp.hostname, int(smtp.port), timeout=self.timeout, context=context
            )
        else:
            connection = smtplib.SMTP(smtp.hostname, int(smtp.port), timeout=self.timeout)
        try:
            connection.set_debuglevel(smtp.debug_smtp)
            connection.ehlo()
            if connection.has_extn("starttls") and not smtp.no_tls:
                connection.starttls(context=ssl.create_default_context())
                connection.ehlo()
            elif smtp.force_tls and not smtp.ssl:
                raise smtplib.SMTPNotSupportedError("mail.tls is set but STARTTLS is not offered")
            if smtp.username and smtp.password:
                connection.login(smtp.username, smtp.password)
        except BaseException:
            connection.close()
            raise
        return connection

    def send(self, messages: Sequence[Outgoing]) -> list[Failure]:
        failed: list[Failure] = []
        connection: smtplib.SMTP | None = None
        try:
            for outgoing in messages:
                try:
                    if connection is None:
                        connection = self.connect()
                    connection.sendmail(outgoing.sender, [outgoing.recipient], outgoing.as_bytes())
                except (
                    smtplib.SMTPRecipientsRefused,
                    smtplib.SMTPSenderRefused,
                    smtplib.SMTPDataError,
                ) as e:
                    # The server refused this one message; the connection is still good.
                    logger.error(
                        "SMTP refused mail to %s about %s: %s", outgoing.recipient, outgoing.uri, e
                    )
                    failed.append((outgoing, str(e)))
                except (OSError, smtplib.SMTPException) as e:
                    logger.error(
                        "Could not send mail to %s about %s: %s",
                        outgoing.recipient,
                        outgoing.uri,
                        e,
                    )
                    failed.append((outgoing, str(e) or type(e).__name__))
                    if connection is not None:
                        connection.close()
                    connection = None
        finally:
            if connection is not None:
                try:
                    connection.quit()
                except (OSError, smtplib.SMTPException):
                    connection.close()
        return failed


class DirectoryTransport:
    """``mail.debug_mailer``: each message becomes an ``.eml`` file of a folder."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def send(self, messages: Sequence[Outgoing]) -> list[Failure]:
        os.makedirs(self.directory, exist_ok=True)
        failed: list[Failure] = []
        for outgoing in messages:
            path = os.path.join(self.directory, f"{uuid.uuid4().hex}.eml")
            try:
                with open(path + ".tmp", "wb") as f:
                    f.write(outgoing.as_bytes())
                # Readers never see a half-written file.
                os.replace(path + ".tmp", path)
            except OSError as e:
                logger.error("Could not write mail about %s to %s: %s", outgoing.uri, path, e)
                failed.append((outgoing, str(e)))
        return failed


class Outbox:
    """A background thread that builds and sends what committed transactions handed over."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._queue: queue.Queue[list[Draft]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, drafts: list[Draft]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="kinto-emailer-outbox", daemon=True
                )
                self._thread.start()
        self._queue.put(drafts)

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            # Everything already waiting goes out over the same connection.
            while True:
                try:
                    batch.extend(self._queue.get_nowait())
                    self._queue.task_done()
                except queue.Empty:
                    break
            try:
                self.transport.send(list(_built(batch)))
            except Exception:
                logger.exception("Mail delivery failed")
            finally:
                self._queue.task_done()

    def join(self) -> None:
        """Wait until every message handed over so far has been sent or given up."""
        self._queue.join()


def _built(drafts: Sequence[Draft]) -> Iterator[Outgoing]:
    """The messages of ``drafts``; one that cannot be built does not stop the others."""
    for draft in drafts:
        try:
            yield build(draft)
        except Exception:
            logger.exception("Could not build the mail to %s about %s", draft.recipient, draft.uri)


def _after_commit(committed: bool, outbox: Outbox, drafts: list[Draft]) -> None:
    if committed:
        outbox.put(drafts)


def prepare_maildir(path: str) -> None:
    """Create the Maildir folders, so that an existing empty folder works too."""
    try:
        for folder in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(path, folder), exist_ok=True)
    except OSError as e:
        raise ConfigurationError(f"Setting 'mail.queue_path': cannot use {path!r}: {e}") from e


class Delivery:
    """Hands messages over at the right moment of the current transaction."""

    def __init__(self, settings: EmailerSettings, outbox: Outbox) -> None:
        self.outbox = outbox
        self.maildir: QueuedMailDelivery | None = None
        if settings.queue_path is not None:
            prepare_maildir(settings.queue_path)
            self.maildir = QueuedMailDelivery(settings.queue_path)

    def schedule(self, drafts: list[Draft]) -> None:
        if not drafts:
            return
        if self.maildir is not None:
            for outgoing in map(build, drafts):
                self.maildir.send(outgoing.sender, [outgoing.recipient], outgoing.message)
            return
        transaction.get().addAfterCommitHook(_after_commit, args=(self.outbox, drafts))


def transport_from_settings(settings: EmailerSettings, mailer: Mailer) -> Transport:
    if settings.debug:
        return DirectoryTransport(settings.debug_directory)
    return SMTPTransport(mailer, settings.smtp_timeout)
