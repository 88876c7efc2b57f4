"""Delivery: when and how messages leave the process.

A client's write only takes note of its change, so that a rolled-back change mails
nobody and no write waits on hooks, templates or the SMTP server. With the memory
backend the change is handed over once the transaction commits to a background thread
(:class:`Outbox`) that works out its messages and sends them; with PostgreSQL it is a
row written in the transaction, turned into jobs by the workers
(:mod:`kinto_emailer.jobs`). With ``mail.queue_path`` the messages are worked out in
the transaction and go to the Maildir queue (repoze.sendmail writes them on commit and
discards them on abort).
"""

import email
import heapq
import itertools
import logging
import os
import queue
import signal
import smtplib
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import transaction
from pyramid.exceptions import ConfigurationError
from pyramid_mailer.mailer import Mailer, SMTP_SSLMailer
from repoze.sendmail.delivery import QueuedMailDelivery
from repoze.sendmail.maildir import TransactionCommitted

from kinto_emailer.deliverylog import TOO_OLD, Entry, MemoryLog, PostgreSQLLog, bucket_of
from kinto_emailer.listener import Change, Expansion, Reads, describe, draft_size
from kinto_emailer.messages import Draft, Outgoing, build
from kinto_emailer.metrics import Counter
from kinto_emailer.preferences import Preferences
from kinto_emailer.quotas import MemoryTally, Tally
from kinto_emailer.settings import EmailerSettings


if TYPE_CHECKING:
    from kinto_emailer.jobs import JobQueue


logger = logging.getLogger(__name__)


def report_sent(draft: Draft, count: Counter) -> None:
    """What every way of sending reports of a message the server accepted: a log line,
    its count, and the time since its change."""
    logger.info("Sent %s to %s about %s", draft.key, draft.recipient.addr_spec, draft.uri)
    count("sent", 1)
    count.timing("delivery_seconds", (datetime.now(UTC) - draft.created).total_seconds())


T = TypeVar("T")


class Expand(Protocol):
    """The mail of a change, to work out a part at a time within the bounds kept by a
    tally: :class:`kinto_emailer.listener.Expansion`."""

    def __call__(
        self,
        change: Change,
        tally: Tally,
        *,
        known: dict[str, Preferences] | None = None,
        reads: Reads | None = None,
    ) -> Expansion: ...


@dataclass(frozen=True)
class Failure:
    """Why a message was not sent, and whether trying again may help.

    ``not_before``: the message was not even tried (the server is known to be down), and
    is tried again no sooner than that many seconds; the attempt does not count.
    """

    reason: str
    permanent: bool
    not_before: float | None = None


class Transport(Protocol):
    def send(self, outgoing: Outgoing) -> Failure | None:
        """Send ``outgoing``; None when it was accepted."""

    def send_all(self, outgoings: Iterable[Outgoing]) -> Iterator[Failure | None]:
        """Send ``outgoings``: the result of each, in their order, as soon as known.

        ``outgoings`` is read as sending goes, in the caller's thread: a caller that stops
        giving messages stops the sending, and every message taken has its result.
        """

    def close(self) -> None:
        """Release the connection, if any."""


def is_permanent(error: Exception) -> bool:
    """A 5xx reply refuses for good; anything else (4xx, network, timeout) may pass later."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in error.recipients.values())
    code = getattr(error, "smtp_code", None)
    return isinstance(code, int) and code >= 500


class Breaker:
    """Stops connecting to a server that did not answer, for a delay that doubles at each
    failure in a row (from :attr:`FIRST` up to :attr:`LONGEST` seconds).

    Without it, each message of a queue would wait ``smtp_timeout`` on a silent server.
    """

    FIRST = 1.0
    LONGEST = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failures = 0
        self.reason = ""
        self._until = 0.0
        self._lock = threading.Lock()  # Connections of one server share their breaker.
        self.opening = threading.Lock()
        """Held while a connection is being opened."""

    def wait(self) -> float:
        """Seconds before the server may be tried again; 0 when it may be now."""
        return max(0.0, self._until - self.clock())

    def trip(self, reason: str) -> float:
        """The server did not answer: how long to leave it alone."""
        with self._lock:
            self.failures += 1
            self.reason = reason
            delay = min(self.LONGEST, self.FIRST * 2 ** (self.failures - 1))
            self._until = self.clock() + delay
            return delay

    def reset(self) -> None:
        with self._lock:
            self.failures = 0
            self._until = 0.0


class SMTPConnection:
    """One SMTP dialogue with the server of the ``mail.*`` settings of pyramid_mailer.

    It is kept between messages and opened again when the server dropped it. When the
    server cannot be reached, the messages that follow are not tried until ``breaker``
    lets a new connection through.
    """

    def __init__(self, mailer: Mailer, timeout: float, breaker: Breaker) -> None:
        self.smtp = mailer.smtp_mailer
        self.timeout = timeout
        self.breaker = breaker
        self._connection: smtplib.SMTP | None = None

    def connect(self) -> smtplib.SMTP:
        smtp = self.smtp
        # pyramid_mailer makes an SMTP_SSLMailer for mail.ssl, but leaves its ssl flag off.
        if smtp.ssl or isinstance(smtp, SMTP_SSLMailer):
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

    def send(self, outgoing: Outgoing) -> Failure | None:
        while True:
            kept = self._connection is not None
            try:
                if self._connection is None:
                    # One connection opened at a time: a server that does not answer
                    # costs one timeout, not one per connection.
                    with self.breaker.opening:
                        if wait := self.breaker.wait():
                            return Failure(self.breaker.reason, permanent=False, not_before=wait)
                        self._connection = self.connect()
                self._connection.sendmail(
                    outgoing.sender, [outgoing.recipient], outgoing.as_bytes()
                )
                self.breaker.reset()
                return None
            except (
                smtplib.SMTPRecipientsRefused,
                smtplib.SMTPSenderRefused,
                smtplib.SMTPDataError,
            ) as e:
                # The server refused this one message; the connection is still good.
                self._reset()
                return Failure(self._from_server(e), is_permanent(e))
            except smtplib.SMTPServerDisconnected as e:
                self.close()
                if not kept:
                    return self._unreachable(e)
                # The server closed the connection kept since the last call: open another.
            except (OSError, smtplib.SMTPException) as e:
                self.close()
                if is_permanent(e):
                    return Failure(self._from_server(e), permanent=True)
                return self._unreachable(e)
            except Exception as e:
                # This message cannot be written out (smtplib raises UnicodeEncodeError
                # and others): it never goes. The dialogue may have stopped midway: the
                # next message starts on a new connection.
                self.close()
                return Failure(f"cannot send the message: {e!r}", permanent=True)

    def _from_server(self, error: Exception) -> str:
        """``error`` as the reason of a failure, naming the server: operators have several."""
        server = f"{self.smtp.hostname}:{self.smtp.port}"
        return f"SMTP server {server}: {error or type(error).__name__}"

    def _unreachable(self, error: Exception) -> Failure:
        reason = self._from_server(error)
        delay = self.breaker.trip(reason)
        logger.warning("%s (it did not answer): no new connection for %ss", reason, delay)
        return Failure(reason, permanent=False)

    def _reset(self) -> None:
        try:
            self._connection.rset()  # type: ignore[union-attr]
        except (OSError, smtplib.SMTPException):
            self.close()

    def close(self) -> None:
        """Say goodbye to the server, if connected."""
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.quit()
            except (OSError, smtplib.SMTPException):
                connection.close()


class SMTPTransport:
    """Sends over up to ``connections`` SMTP connections at once (``smtp_connections``).

    Each message waits for the server's answer before the next goes on its connection:
    several connections keep the server busy while each waits. They share one
    :class:`Breaker`: a server that does not answer one does not get the others.
    """

    def __init__(self, mailer: Mailer, timeout: float, connections: int = 1) -> None:
        self.breaker = Breaker()
        self.connections = [
            SMTPConnection(mailer, timeout, self.breaker) for _ in range(connections)
        ]
        self._idle: queue.LifoQueue[SMTPConnection] = queue.LifoQueue()
        for connection in self.connections:
            self._idle.put(connection)
        self._senders: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def send(self, outgoing: Outgoing) -> Failure | None:
        # The connection used last first: the others may be let go by the server.
        connection = self._idle.get()
        try:
            return connection.send(outgoing)
        finally:
            self._idle.put(connection)

    def send_all(self, outgoings: Iterable[Outgoing]) -> Iterator[Failure | None]:
        if len(self.connections) == 1:
            yield from map(self.send, outgoings)
            return
        with self._lock:
            if self._senders is None:
                self._senders = ThreadPoolExecutor(
                    len(self.connections), thread_name_prefix="kinto-emailer-smtp"
                )
            senders = self._senders
        # As many messages under way as there are connections, and one ready for each.
        pending: deque[Future[Failure | None]] = deque()
        for outgoing in outgoings:
            if len(pending) == 2 * len(self.connections):
                yield pending.popleft().result()
            pending.append(senders.submit(self.send, outgoing))
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        """Say goodbye to the server on every connection."""
        for connection in self.connections:
            connection.close()


class DirectoryTransport:
    """``mail.debug_mailer``: each message becomes an ``.eml`` file of a folder."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def close(self) -> None:
        pass

    def send_all(self, outgoings: Iterable[Outgoing]) -> Iterator[Failure | None]:
        return map(self.send, outgoings)

    def send(self, outgoing: Outgoing) -> Failure | None:
        path = os.path.join(self.directory, f"{uuid.uuid4().hex}.eml")
        try:
            os.makedirs(self.directory, exist_ok=True)
            with open(path + ".tmp", "wb") as f:
                f.write(outgoing.as_bytes())
            # Readers never see a half-written file.
            os.replace(path + ".tmp", path)
        except OSError as e:
            return Failure(f"{path}: {e}", permanent=False)
        return None


def next_delay(failure: Failure, attempts: int, retry_delays: Sequence[float]) -> float | None:
    """Seconds to wait before the next attempt, or None to give up on the message."""
    if failure.permanent or attempts > len(retry_delays):
        return None
    return retry_delays[attempts - 1]


@dataclass(eq=False)
class Job:
    """One message to send, and how it went so far."""

    draft: Draft
    attempts: int = 0
    last_error: str = ""


COUNTERS = ("queued", "sent", "retried", "failed", "dropped", "limited")


class Outcomes(Protocol):
    """Where a sender keeps what happened to each message (in memory, or in PostgreSQL)."""

    def sent(self, job: Job) -> None: ...

    def dropped(self, job: Job) -> None: ...

    def retry(self, job: Job, delay: float) -> None: ...

    def failed(self, job: Job) -> None: ...


def attempt(
    jobs: Iterable[Job], transport: Transport, settings: EmailerSettings, outcomes: Outcomes
) -> None:
    """Try each job's message once, and report what happened to ``outcomes`` right away.

    Older than ``max_age``: dropped. Accepted: sent. Refused for good (5xx), or still
    failing after the last of ``retry_delays``: failed. Otherwise: retried after the next
    delay. The log has one line per outcome of the batch, with a count and the first
    message as example.
    """
    report = Report()
    try:
        _attempt(jobs, transport, settings, outcomes, report)
    finally:
        report.log()


class Report:
    """What went wrong in a batch, logged once: a failing server must not log per message."""

    LINES = {
        "dropped": (logging.WARNING, "%s message(s) dropped, their change older than max_age"),
        "failed": (logging.ERROR, "%s message(s) failed for good"),
        "retried": (logging.WARNING, "%s message(s) not sent, to be tried again"),
    }

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, str] = {}

    def add(self, outcome: str, job: Job, detail: str) -> None:
        example = f"to {job.draft.recipient.addr_spec} about {job.draft.uri}: {detail}"
        logger.debug("Mail %s %s", outcome, example)
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        self.examples.setdefault(outcome, example)

    def log(self) -> None:
        for outcome, count in self.counts.items():
            level, text = self.LINES[outcome]
            logger.log(level, text + " (first: %s)", count, self.examples[outcome])


def _attempt(
    jobs: Iterable[Job],
    transport: Transport,
    settings: EmailerSettings,
    outcomes: Outcomes,
    report: Report,
) -> None:
    sending: deque[Job] = deque()
    max_age = timedelta(seconds=settings.max_age)
    retry_delays = settings.retry_delays

    def messages() -> Iterator[Outgoing]:
        """The messages of ``jobs`` to send; the others' outcomes, as they come."""
        for job in jobs:
            draft = job.draft
            if datetime.now(UTC) - draft.created > max_age:
                report.add("dropped", job, "older than max_age")
                outcomes.dropped(job)
                continue
            job.attempts += 1
            try:
                outgoing = build(draft, settings.html_layout)
            except Exception as e:  # A bug of this one message: keep it, say why, go on.
                if "failed" not in report.counts:  # The first one's traceback is enough.
                    logger.exception("Cannot build the mail about %s", draft.uri)
                job.last_error = f"cannot build the message: {e!r}"
                report.add("failed", job, job.last_error)
                outcomes.failed(job)
                continue
            sending.append(job)
            yield outgoing

    for failure in transport.send_all(messages()):
        job = sending.popleft()
        if failure is None:
            outcomes.sent(job)
            continue
        job.last_error = failure.reason
        if failure.not_before is not None:
            # Not tried: waits for the server, without using up one of its attempts.
            job.attempts -= 1
            delay = max([failure.not_before, *retry_delays[:1]])
            report.add("retried", job, f"{failure.reason}, in {delay}s")
            outcomes.retry(job, delay)
            continue
        delay = next_delay(failure, job.attempts, retry_delays)
        if delay is None:
            report.add("failed", job, f"{failure.reason}, after {job.attempts} attempt(s)")
            outcomes.failed(job)
        else:
            report.add("retried", job, f"{failure.reason}, in {delay}s")
            outcomes.retry(job, delay)


@dataclass(eq=False)
class Lane:
    """One bucket's mail in the outbox: messages due, oldest first, then its changes in
    order, the first of them maybe worked out in part."""

    jobs: deque[Job] = field(default_factory=deque)
    changes: deque[Change] = field(default_factory=deque)
    expansion: Expansion | None = None
    scheduled: int = 0
    """Messages waiting for their time (a retry), not yet in ``jobs``."""
    turn: bool = False
    """Waiting for its turn, or in the round being sent."""

    def ready(self, max_scheduled: int) -> bool:
        """Whether a round would find mail to send: while ``max_scheduled`` messages wait
        for a retry, the changes wait too."""
        return bool(self.jobs) or (
            bool(self.changes or self.expansion) and self.scheduled < max_scheduled
        )


class Outbox:
    """A background thread that mails about what committed transactions handed over.

    It sends in rounds of :attr:`ROUND_MESSAGES` messages at most, shared between the
    buckets with mail waiting longest, interleaved: a bucket sending 100,000 messages
    takes a turn in each round, and another bucket's mail waits for one round, not for
    them. A change's messages are worked out as their turns come (see
    :class:`~kinto_emailer.listener.Expansion`), so that memory holds a round of them, not
    the whole of what is waiting.

    Temporary failures are tried again after ``retry_delays``; a message refused for
    good, or still failing after the last delay, is kept in :attr:`failures`, the newest
    :attr:`MAX_FAILURES` of them (:attr:`forgotten` counts those pushed out). A message
    whose change is older than ``max_age`` is dropped instead of sent. What becomes of each
    message is kept in :attr:`log`, the delivery log of the process.
    """

    MAX_FAILURES = 1000
    """Failed messages kept in memory: 400,000 of them took 255 MB."""
    ROUND_MESSAGES = 100
    """Messages (and notices worked out) of a round: few enough to go out in a moment."""
    ROUND_CHARS = 4 * 1024 * 1024
    """Characters of the messages a round works out, but for one message of each bucket."""
    MAX_SCHEDULED = 1000
    """Messages of a bucket waiting for a retry past which its changes wait for them: a
    server that is down does not turn a flood of changes into messages in memory."""

    def __init__(
        self,
        transport: Transport,
        settings: EmailerSettings,
        count: Counter,
        expand: Expand,
    ) -> None:
        self.transport = transport
        self.expand = expand
        self.settings = settings
        self.failures: deque[Job] = deque()
        self.forgotten = 0
        self.counts = dict.fromkeys(COUNTERS, 0)
        self._count = count
        self.tally = MemoryTally(self._add)
        self.log = MemoryLog(settings.log_max_age)
        self._lanes: dict[str, Lane] = {}
        # Buckets with mail ready, the next to go first.
        self._turns: deque[str] = deque()
        self._due: list[tuple[float, int, Job]] = []
        self._sequence = itertools.count()
        self._sending = 0
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    def _add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n
        self._count(name, n)

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="kinto-emailer-outbox", daemon=True
            )
            self._thread.start()

    def _queued(self, drafts: Sequence[Draft]) -> None:
        self._add("queued", len(drafts))
        self.log.record(Entry.of(draft, "queued") for draft in drafts)

    def put(self, drafts: Sequence[Draft]) -> None:
        jobs = [Job(draft) for draft in drafts]
        with self._condition:
            self._schedule(jobs, delay=0.0)
            self._queued(drafts)

    def put_change(self, change: Change) -> None:
        with self._condition:
            self._start()
            self._lane(change["base"]["bucket_id"]).changes.append(change)
            self._wake(change["base"]["bucket_id"])

    def _lane(self, bucket: str) -> Lane:
        lane = self._lanes.get(bucket)
        if lane is None:
            lane = self._lanes[bucket] = Lane()
        return lane

    def _wake(self, bucket: str) -> None:
        """Give ``bucket`` a turn if it has mail ready and is not already waiting for one."""
        lane = self._lanes[bucket]
        if not lane.turn and lane.ready(self.MAX_SCHEDULED):
            lane.turn = True
            self._turns.append(bucket)
            self._condition.notify_all()

    def send_now(self, drafts: Sequence[Draft]) -> None:
        """Try ``drafts`` in the calling thread; retries are left to the background one."""
        self._queued(drafts)
        attempt([Job(d) for d in drafts], self.transport, self.settings, self)

    def _schedule(self, jobs: Sequence[Job], delay: float) -> None:
        self._start()
        due = time.monotonic() + delay
        for job in jobs:
            self._lane(bucket_of(job.draft.uri)).scheduled += 1
            heapq.heappush(self._due, (due, next(self._sequence), job))
        self._condition.notify_all()

    def _release_due(self) -> None:
        """Messages whose time came join their bucket's lane."""
        while self._due and self._due[0][0] <= time.monotonic():
            job = heapq.heappop(self._due)[2]
            bucket = bucket_of(job.draft.uri)
            lane = self._lanes[bucket]
            lane.scheduled -= 1
            lane.jobs.append(job)
            self._wake(bucket)

    def _take_round(self) -> tuple[list[tuple[str, Lane, list[Job]]], int]:
        """Wait for mail ready, and take a round: its buckets, each with its due messages
        (up to its share), and the share of each."""
        with self._condition:
            while True:
                self._release_due()
                if self._turns:
                    break
                timeout = self._due[0][0] - time.monotonic() if self._due else None
                self._condition.wait(timeout)
            count = min(len(self._turns), self.ROUND_MESSAGES)
            share = -(-self.ROUND_MESSAGES // count)
            taken = []
            for _ in range(count):
                bucket = self._turns.popleft()
                lane = self._lanes[bucket]
                jobs = [lane.jobs.popleft() for _ in range(min(share, len(lane.jobs)))]
                taken.append((bucket, lane, jobs))
            self._sending += 1
            return taken, share

    def _work_out(
        self, lane: Lane, count: int, size: int, known: dict[str, Preferences], reads: Reads
    ) -> Iterator[Job]:
        """Messages of ``lane``'s changes, oldest first: from ``count`` notices (one at
        least for each change) and ``size`` characters at most, but for the first one.

        Worked out as they are taken: while the first ones are being sent. The changes
        of a round share what they read (``known``, ``reads``), as a worker's claim does."""
        while count > 0 and size > 0 and lane.scheduled < self.MAX_SCHEDULED:
            expansion = lane.expansion
            if expansion is None:
                with self._condition:
                    if not lane.changes:
                        break
                    change = lane.changes.popleft()
                expansion = lane.expansion = self.expand(
                    change, self.tally, known=known, reads=reads
                )
            before = expansion.notices
            try:
                # Its web notifications are kept as it is worked out.
                more, _, logged = expansion.take(count, size)
            except Exception:  # This change's: the others still mail.
                logger.exception("Could not prepare the emails of %s", describe(expansion.change))
                more, logged = [], []
            self.log.record(logged)
            if expansion.done:
                lane.expansion = None
            count -= max(1, expansion.notices - before)
            size -= sum(map(draft_size, more))
            self._queued(more)
            yield from map(Job, more)

    def _run(self) -> None:
        while True:
            taken, share = self._take_round()
            try:
                size = self.ROUND_CHARS // len(taken)
                known: dict[str, Preferences] = {}
                reads = Reads()
                lanes = [
                    itertools.chain(
                        jobs, self._work_out(lane, share - len(jobs), size, known, reads)
                    )
                    for _, lane, jobs in taken
                ]
                # One message of each bucket, then the second of each...
                turns = itertools.zip_longest(*lanes)
                jobs = (job for turn in turns for job in turn if job is not None)
                attempt(jobs, self.transport, self.settings, self)
            except Exception:
                logger.exception("Mail delivery failed")
            finally:
                with self._condition:
                    for bucket, lane, _ in taken:
                        lane.turn = False
                        self._wake(bucket)
                        if not lane.turn and not lane.scheduled:
                            del self._lanes[bucket]  # Nothing left: no changes either.
                    self._sending -= 1
                    self._condition.notify_all()

    def sent(self, job: Job) -> None:
        self.counts["sent"] += 1
        report_sent(job.draft, self._count)
        self.log.record([Entry.of(job.draft, "sent", at=datetime.now(UTC))])

    def dropped(self, job: Job) -> None:
        self._add("dropped")
        self.log.record([Entry.of(job.draft, "dropped", detail=TOO_OLD)])

    def retry(self, job: Job, delay: float) -> None:
        with self._condition:
            self._schedule([job], delay)
        self._add("retried")
        self._log_attempt(job, "retrying", datetime.now(UTC) + timedelta(seconds=delay))

    def failed(self, job: Job) -> None:
        with self._condition:
            self.failures.append(job)
            while len(self.failures) > self.MAX_FAILURES:
                self.failures.popleft()
                self.forgotten += 1
        self._add("failed")
        self._log_attempt(job, "failed", datetime.now(UTC))

    def _log_attempt(self, job: Job, state: str, at: datetime) -> None:
        entry = Entry.of(job.draft, state, at, job.attempts, job.last_error)
        self.log.record([entry])

    def flush(self) -> None:
        """Forget the hourly usage and the log, with Kinto's data."""
        self.tally.flush()
        self.log.flush()

    def close(self, timeout: float) -> None:
        """When the process stops: send what is due, for ``timeout`` seconds at most."""
        if not self.join(timeout):
            logger.warning("Stopping with mail still to send after %ss (drain_timeout)", timeout)
        self.transport.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no change is ready and nothing is due or being sent; False if
        ``timeout`` passed first.

        Messages waiting for a retry later on do not count, nor the changes of a bucket
        that waits for too many of them (:attr:`MAX_SCHEDULED`).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while (
                self._sending or self._turns or (self._due and self._due[0][0] <= time.monotonic())
            ):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._condition.wait(remaining)
        return True


def _after_commit(committed: bool, put: Callable[[T], None], item: T) -> None:
    if committed:
        put(item)


class MaildirDelivery(QueuedMailDelivery):
    """repoze.sendmail's Maildir queue, without an error logged after every commit.

    Once a transaction's after-commit hooks ran, the transaction package aborts its
    resources again to clean them up; repoze's message, already committed, then raises
    TransactionCommitted, which is logged as an error though the message is queued.
    """

    def createDataManager(self, *args: Any, **kw: Any) -> Any:  # noqa: N802 (repoze's name)
        manager = super().createDataManager(*args, **kw)
        abort = manager.onAbort

        def abort_unless_committed() -> None:
            try:
                abort()
            except TransactionCommitted:
                pass

        manager.onAbort = abort_unless_committed
        return manager


def prepare_maildir(path: str) -> None:
    """Create the Maildir folders, so that an existing empty folder works too."""
    try:
        for folder in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(path, folder), exist_ok=True)
    except OSError as e:
        raise ConfigurationError(f"Setting 'mail.queue_path': cannot use {path!r}: {e}") from e


class Delivery:
    """Hands changes and messages over at the right moment of the current transaction.

    To the Maildir queue (``mail.queue_path``) within the transaction; to the ``queue``
    (PostgreSQL storage) within the transaction; else to the outbox once the
    transaction committed. The debug mailer's files are written as the transaction
    commits, before the client gets its response: tests read them right after.
    """

    def __init__(
        self, settings: EmailerSettings, outbox: Outbox, queue: "JobQueue | None" = None
    ) -> None:
        self.outbox = outbox
        self.queue = queue
        self.layout = settings.html_layout
        self.at_commit = settings.debug
        self.maildir: MaildirDelivery | None = None
        if settings.queue_path is not None:
            prepare_maildir(settings.queue_path)
            self.maildir = MaildirDelivery(settings.queue_path)

    def record(self, change: Change) -> None:
        """Take note of a change of the current transaction: it mails once committed."""
        if self.maildir is not None or self.at_commit:
            # Worked out in the transaction: storage may not be read once it committed.
            # Web notifications are kept in the transaction; the log once it committed.
            mail, _, logged = self.outbox.expand(change, self.outbox.tally).take()
            self.schedule(mail)
            transaction.get().addAfterCommitHook(
                _after_commit, args=(self.outbox.log.record, logged)
            )
        elif self.queue is not None:
            self.queue.record(change)
        else:
            transaction.get().addAfterCommitHook(
                _after_commit, args=(self.outbox.put_change, change)
            )

    def catch_up(self, timeout: float) -> None:
        """Work out the mail of every change committed so far: digests must include it."""
        if self.queue is not None:
            self.queue.expand_all()
        else:
            self.outbox.join(timeout)

    def schedule(self, drafts: list[Draft]) -> None:
        if not drafts:
            return
        if self.maildir is not None:
            for outgoing in (build(draft, self.layout) for draft in drafts):
                # repoze.sendmail re-encodes headers the compat32 way, folding long ones
                # with line feeds that modern EmailMessage objects refuse.
                message = email.message_from_bytes(outgoing.as_bytes())
                self.maildir.send(outgoing.sender, [outgoing.recipient], message)
            # Queued for the program that sends the Maildir's mail, once committed.
            entries = [Entry.of(draft, "queued") for draft in drafts]
            transaction.get().addAfterCommitHook(
                _after_commit, args=(self.outbox.log.record, entries)
            )
        elif self.at_commit:
            transaction.get().addAfterCommitHook(
                _after_commit, args=(self.outbox.send_now, drafts)
            )
        elif self.queue is not None:
            self.queue.defer(drafts)
        else:
            transaction.get().addAfterCommitHook(_after_commit, args=(self.outbox.put, drafts))

    @property
    def log(self) -> "MemoryLog | PostgreSQLLog":
        """The delivery log: the queue's, else the process's own."""
        return self.outbox.log if self.queue is None else self.queue.log

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every change is worked out and nothing is due or being sent; False if
        ``timeout`` passed first."""
        if self.queue is not None:
            return self.queue.join(timeout)
        return self.outbox.join(timeout)

    def close(self, timeout: float) -> None:
        """When the process stops: let what is due or under way go out, then stop."""
        if self.queue is not None:
            self.queue.close()
        self.outbox.close(timeout)


def drain_on_sigterm() -> None:
    """Stop on SIGTERM (systemd's and Docker's stop) as on SIGINT: by KeyboardInterrupt, so
    that the process exits through ``atexit``, which sends what is due.

    Only where SIGTERM would otherwise kill the process at once: a server that handles it
    (gunicorn's workers) is left alone, and Python sets handlers in the main thread only.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def where_mail_goes(settings: EmailerSettings, mailer: Mailer) -> str:
    """Where mail goes, in words, for the startup line."""
    if settings.queue_path is not None:
        return f"to the Maildir {settings.queue_path} (another program sends it)"
    if settings.debug:
        return f"into .eml files of {settings.debug_directory} (mail.debug_mailer), not sent"
    smtp = mailer.smtp_mailer
    if smtp.ssl or isinstance(smtp, SMTP_SSLMailer):
        tls = "TLS from the start"
    elif smtp.force_tls:
        tls = "STARTTLS required"
    else:
        tls = "no TLS"
    return (
        f"to the SMTP server {smtp.hostname}:{smtp.port} ({tls}),"
        f" over {settings.smtp_connections} connection(s) per process"
    )


def how_the_queue_runs(settings: EmailerSettings, queue: "JobQueue | None") -> str:
    """How changes become mail, in words, for the startup line."""
    if settings.queue_path is not None or settings.debug:
        return "mail is worked out in each write's transaction"
    if queue is None:
        return (
            "changes are worked out and sent by a thread of this process once committed"
            " (without PostgreSQL storage, mail not sent yet is lost on restart)"
        )
    if settings.worker:
        return "changes are queued in PostgreSQL; a worker thread of this process sends"
    return "changes are queued in PostgreSQL for the `kinto-emailer worker` processes"


def transport_from_settings(settings: EmailerSettings, mailer: Mailer) -> Transport:
    if settings.debug:
        return DirectoryTransport(settings.debug_directory)
    return SMTPTransport(mailer, settings.smtp_timeout, settings.smtp_connections)
