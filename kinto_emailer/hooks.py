"""Hooks: the ``kinto-emailer`` JSON of bucket and collection metadata.

One parser serves both callers: validation when metadata is saved (raising
:class:`InvalidHook` with the JSON path) and the event listener (skipping, with a log
line, a stored hook that predates these checks).
"""

import functools
import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jsonschema
import re2

from kinto_emailer import caching, htmlbody, recipients, templates
from kinto_emailer.errors import InvalidHook, RenderError
from kinto_emailer.preferences import CADENCES, CHANNELS
from kinto_emailer.settings import EmailerSettings


logger = logging.getLogger(__name__)

METADATA_KEY = "kinto-emailer"
DEFAULT_SUBJECT = "New message"

FILTER_FIELDS = ("resource_name", "action", "event", "id", "record_id", "collection_id")

RESOURCE_EVENTS = ("kinto.core.events.AfterResourceChanged", "kinto.core.events.ResourceChanged")
"""Names of a change of a record, collection or group; the first one is the default filter."""
REVIEW_EVENTS = tuple(
    f"{module}.{name}"
    for module in ("kinto_remote_settings.signer.events", "kinto_signer.events")
    for name in ("ReviewRequested", "ReviewApproved", "ReviewRejected", "ReviewCanceled")
)
KNOWN_EVENTS = RESOURCE_EVENTS + REVIEW_EVENTS
"""The events this plugin and Kinto's signer send; a hook may name any other event class
by its path, for events that another plugin sends to :func:`build_notification`."""
_KNOWN_MODULES = frozenset(name.rsplit(".", 1)[0] for name in KNOWN_EVENTS)
RESOURCE_NAMES = ("record", "collection", "group")
ACTIONS = {
    "create": "create",
    "update": "update",
    "delete": "delete",
    # The original documentation's own example says "updated": accept the past tense.
    "created": "create",
    "updated": "update",
    "deleted": "delete",
}
_EXACT_VALUES: dict[str, tuple[str, ...]] = {
    "resource_name": RESOURCE_NAMES,
    "action": tuple(ACTIONS),
}

_STRING = {"type": "string"}
_CHANNEL_LIST = {
    "type": "array",
    "minItems": 1,
    "uniqueItems": True,
    "items": {"enum": list(CHANNELS)},
}
HOOK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["template", "recipients"],
    "additionalProperties": False,
    "properties": {
        "template": _STRING,
        "html_template": _STRING,
        "subject": _STRING,
        "sender": _STRING,
        "recipients": {"type": "array", "minItems": 1, "items": _STRING},
        **{field: {"type": "string", "minLength": 1} for field in FILTER_FIELDS},
        "cadence": {"enum": list(CADENCES)},
        # true (every channel) or the channels locked; the list's keywords only apply
        # to lists.
        "non_editable": {**_CHANNEL_LIST, "type": ["boolean", "array"]},
        "group_threshold": {"type": "integer", "minimum": 1},
        "channels": _CHANNEL_LIST,
    },
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["hooks"],
    "additionalProperties": False,
    "properties": {"hooks": {"type": "array", "items": HOOK_SCHEMA}},
}
# The list itself; each hook is checked on its own, if it changed.
_LIST_VALIDATOR = jsonschema.Draft7Validator(
    {**SCHEMA, "properties": {"hooks": {"type": "array"}}}
)
_HOOK_VALIDATOR = jsonschema.Draft7Validator(HOOK_SCHEMA)

MAX_PATTERN_LENGTH = 200
"""Characters of a filter's regular expression, ``^`` included."""
MAX_PATTERN_PROGRAM = 1000
"""Instructions of a filter's regular expressions once compiled by RE2: matching a value
takes at worst a time proportional to this size times the value's length."""
MAX_PATTERN_MEMORY = 256 * 1024
"""Bytes RE2 may use for one regular expression, compiled and matching (its ``max_mem``)."""
MAX_REPEAT = 1000
"""Largest repeat count (``{n,m}``), RE2's own limit."""

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = MAX_PATTERN_MEMORY
# Only whether a value matches counts: no submatches to track, so RE2 keeps to its DFA.
_RE2_OPTIONS.never_capture = True
# Refused patterns are the editor's to hear about (a 400), not the server log's.
_RE2_OPTIONS.log_errors = False
_LOOKAHEAD = "(?!"
# Digits in braces: RE2 reads a number it cannot take ({99999999999}, {01}, {,5}) as
# literal text, where Python's re read a repeat count.
_BRACES = re.compile(r"(?<!\\x)\{([0-9,]*)\}")
_REPEAT = re.compile(r"(0|[1-9][0-9]*)(?:,(0|[1-9][0-9]*)?)?")


class _Matcher(Protocol):
    """What the plugin uses of a pattern compiled by RE2."""

    @property
    def programsize(self) -> int: ...

    def match(self, text: bytes) -> object | None: ...


@dataclass(frozen=True)
class Pattern:
    """A filter's regular expression, matched by RE2 from the start of the value, in
    time linear in the value's length (RE2 never backtracks).

    ``excluded`` holds the negative lookaheads that start the pattern, as in 4.x's
    ``^(?!drafts$)``: RE2 has no lookarounds, so each is a pattern of its own that the
    value must not match, which is what a lookahead at the start means.
    """

    required: _Matcher
    excluded: tuple[_Matcher, ...] = ()

    def match(self, value: str) -> bool:
        # As UTF-8 bytes: RE2's own text, so nothing converts offsets back to characters.
        text = value.encode(errors="surrogatepass")
        return self.required.match(text) is not None and not any(
            e.match(text) is not None for e in self.excluded
        )


def _re2(pattern: str) -> _Matcher:
    """``pattern`` compiled to match from the start of a value."""
    try:
        return re2.compile(f"^{pattern}", _RE2_OPTIONS)  # type: ignore[no-any-return]
    except re2.error as e:
        raise ValueError(e.args[0].decode(errors="replace")) from e
    except UnicodeEncodeError as e:
        raise ValueError("not valid Unicode text") from e


def _lookahead(text: str) -> tuple[_Matcher, str]:
    """The lookahead that ``text`` (after its ``(?!``) starts with, compiled, and the rest.

    Its body ends at the first ``)`` before which it compiles: it is then balanced, so
    a later ``)`` would close nothing.
    """
    for end, character in enumerate(text):
        if character != ")":
            continue
        try:
            return _re2(text[:end]), text[end + 1 :]
        except ValueError:
            continue
    _re2(f"(?:{text}")  # Raises RE2's own account of what is wrong.
    raise ValueError(f"{_LOOKAHEAD}{text} is not closed")


def compile_pattern(text: str) -> Pattern:
    """Compile a filter's ``^...`` regular expression; ValueError says why it cannot be."""
    if len(text) > MAX_PATTERN_LENGTH:
        raise ValueError(f"at most {MAX_PATTERN_LENGTH} characters, not {len(text)}")
    for braces in _BRACES.finditer(text):
        counts = _REPEAT.fullmatch(braces[1])
        if counts is None or any(int(c) > MAX_REPEAT for c in counts.groups() if c):
            raise ValueError(
                f"{braces[0]}: repeat counts are at most {MAX_REPEAT}, written {{n}}, {{n,}} "
                "or {n,m}"
            )
    rest, excluded = text[1:], []
    while rest.startswith(_LOOKAHEAD):
        lookahead, rest = _lookahead(rest[len(_LOOKAHEAD) :])
        excluded.append(lookahead)
    required = _re2(rest)
    size = sum(r.programsize for r in (required, *excluded))
    if size > MAX_PATTERN_PROGRAM:
        raise ValueError(
            f"too large: RE2 compiles it to {size} instructions, at most "
            f"{MAX_PATTERN_PROGRAM} (repeat counts multiply what they repeat)"
        )
    return Pattern(required, tuple(excluded))


@dataclass(frozen=True)
class Filter:
    field: str
    value: str
    pattern: Pattern | None

    def matches(self, candidates: tuple[str, ...]) -> bool:
        """True when one of the event's values for this field matches."""
        if self.pattern is not None:
            return any(self.pattern.match(c) for c in candidates)
        return self.value in candidates


@dataclass(frozen=True)
class Hook:
    template: str
    subject: str
    sender: str | None
    recipients: tuple[str, ...]
    filters: tuple[Filter, ...]
    cadence: str = "immediate"
    """Immediate mail, or a daily or weekly digest, unless recipients choose otherwise."""
    non_editable: frozenset[str] = frozenset()
    """The channels whose recipients cannot change what they get from this hook: its
    cadence and whether email comes, or whether web notifications come."""
    group_threshold: int | None = None
    """Else ``kinto.emailer.group_threshold``."""
    channels: tuple[str, ...] = ("email",)
    """Some of :data:`CHANNELS`; not in the fingerprint: mail keys stay those of 4.x hooks."""
    html_template: str = ""
    """The HTML body, beside the text one (``template``); empty: text only."""

    def matches(self, facts: Mapping[str, tuple[str, ...]]) -> bool:
        """``facts`` maps each filter field to the event's values (an event has two names)."""
        return all(f.matches(facts.get(f.field, ())) for f in self.filters)

    def failed(self, facts: Mapping[str, tuple[str, ...]]) -> list[Filter]:
        """The filters that ``facts`` do not match (see :meth:`matches`)."""
        return [f for f in self.filters if not f.matches(facts.get(f.field, ()))]

    @functools.cached_property
    def fingerprint(self) -> str:
        """What the hook says, for idempotency keys: an edited hook is another hook."""
        filters = [(f.field, f.value) for f in self.filters]
        said = [self.template, self.subject, self.sender, self.recipients, filters]
        # Only when set: the keys of hooks without one stay those of 4.x.
        text = json.dumps(said + [self.html_template] if self.html_template else said)
        return hashlib.sha256(text.encode()).hexdigest()


def _path(*parts: object) -> str:
    return ".".join(["data", METADATA_KEY, *(str(p) for p in parts)])


def is_event_class(value: str) -> bool:
    """A known event, or what another module's class is called (``module.Class``), as
    kinto-emailer 4.x matched it. In the known events' modules, only those are sent."""
    if value in KNOWN_EVENTS:
        return True
    module, _, name = value.rpartition(".")
    return module not in _KNOWN_MODULES and all(
        part.isidentifier() for part in (*module.split("."), name)
    )


def parse_filter(field: str, value: str, path: str) -> Filter:
    """One filter of a hook: an exact value, or a regular expression (``^...``)."""
    if value.startswith("^"):
        try:
            return Filter(field, value, compile_pattern(value))
        except ValueError as e:
            raise InvalidHook(path, f"Invalid regular expression: {e}") from e
    allowed = _EXACT_VALUES.get(field)
    if allowed is not None and value not in allowed:
        raise InvalidHook(
            path, f"{value!r} is not one of {', '.join(allowed)} (or a regular expression: ^...)"
        )
    if field == "event" and not is_event_class(value):
        raise InvalidHook(
            path,
            f"{value!r} is not one of {', '.join(KNOWN_EVENTS)}, nor the path of another"
            " module's event class, such as 'mylib.events.Published' (or a regular"
            " expression: ^...)",
        )
    if field == "action":
        value = ACTIONS[value]
    return Filter(field, value, None)


def parse_hook(
    raw: Mapping[str, Any], index: int, bucket_id: str, settings: EmailerSettings
) -> Hook:
    """Check one hook already validated against :data:`HOOK_SCHEMA` and build it."""
    filters = [
        parse_filter(f, raw[f], _path("hooks", index, f)) for f in FILTER_FIELDS if f in raw
    ]
    if "event" not in raw:
        filters.append(Filter("event", RESOURCE_EVENTS[0], None))

    for field in ("template", "subject", "sender"):
        if field in raw:
            templates.check(raw[field], _path("hooks", index, field))
    if "html_template" in raw:
        htmlbody.check(raw["html_template"], _path("hooks", index, "html_template"))
    sender = raw.get("sender")
    if sender is not None and templates.placeholder_count(sender) == 0:
        try:
            recipients.parse_mailbox(sender)
        except ValueError as e:
            raise InvalidHook(_path("hooks", index, "sender"), str(e)) from e

    addresses = raw["recipients"]
    if len(addresses) > settings.max_recipients:
        raise InvalidHook(
            _path("hooks", index, "recipients"),
            f"A hook may list {settings.max_recipients} recipients at the most "
            "(setting kinto.emailer.max_recipients)",
        )
    for position, recipient in enumerate(addresses):
        recipients.check_recipient(
            recipient,
            _path("hooks", index, "recipients", position),
            bucket_id,
            settings.allowed_domains,
        )
    # A hook may ask for summaries sooner than the operator, never later.
    threshold = settings.group_threshold
    if threshold is None or raw.get("group_threshold", threshold) < threshold:
        threshold = raw.get("group_threshold", threshold)
    return Hook(
        template=raw["template"],
        subject=raw.get("subject", DEFAULT_SUBJECT),
        sender=sender,
        recipients=tuple(addresses),
        filters=tuple(filters),
        cadence=raw.get("cadence", "immediate"),
        non_editable=_locked_channels(raw.get("non_editable", False)),
        group_threshold=threshold,
        channels=tuple(raw.get("channels", ("email",))),
        html_template=raw.get("html_template", ""),
    )


def _locked_channels(non_editable: bool | list[str]) -> frozenset[str]:
    """The channels a ``non_editable`` value (checked against :data:`HOOK_SCHEMA`) locks."""
    if isinstance(non_editable, bool):
        return frozenset(CHANNELS) if non_editable else frozenset()
    return frozenset(non_editable)


def _check_schema(validator: jsonschema.Draft7Validator, value: Any, *prefix: object) -> None:
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        raise InvalidHook(_path(*prefix, *errors[0].absolute_path), errors[0].message)


def _check_bounds(raw: Mapping[str, Any], index: int, settings: EmailerSettings) -> None:
    """What the operator's bounds refuse on save; stored hooks are held to them on use."""
    operator = settings.group_threshold
    if operator is not None and raw.get("group_threshold", operator) > operator:
        raise InvalidHook(
            _path("hooks", index, "group_threshold"),
            f"A hook may lower the group threshold, not raise it above {operator}"
            " (setting kinto.emailer.group_threshold)",
        )
    if "sender" not in raw:
        return
    path = _path("hooks", index, "sender")
    try:
        mailbox = recipients.parse_mailbox(templates.render_line(raw["sender"], {}))
    except (ValueError, RenderError) as e:
        raise InvalidHook(
            path, "Only the name of a sender may hold placeholders: '{user_id} <a@example.com>'"
        ) from e
    if not recipients.sender_allowed(mailbox, settings.default_sender, settings.allowed_senders):
        allowed = [settings.default_sender or "", *settings.allowed_senders]
        raise InvalidHook(
            path,
            f"{mailbox.addr_spec!r} is not an allowed sender: leave 'sender' out to send from"
            " mail.default_sender, or send from "
            + (", ".join(a for a in allowed if a) or "(none allowed)")
            + " (setting kinto.emailer.allowed_senders)",
        )


def _too_many(count: int, settings: EmailerSettings) -> str | None:
    if count <= settings.max_hooks:
        return None
    return (
        f"A bucket or collection may hold {settings.max_hooks} hooks at the most"
        " (setting kinto.emailer.max_hooks)"
    )


def validate(
    metadata: Mapping[str, Any],
    bucket_id: str,
    settings: EmailerSettings,
    stored: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`InvalidHook` for the first problem of what ``metadata`` changes in the
    hooks of ``stored`` (the object it replaces, if any).

    What is stored already is not checked again: a hook that an earlier version let in
    and today's checks refuse is skipped when used (see :func:`load`), and never makes a
    write that leaves it as it is fail.
    """
    if METADATA_KEY not in metadata:
        return
    value = metadata[METADATA_KEY]
    before = (stored or {}).get(METADATA_KEY)
    if value == before:
        return
    for _, problem in _problems(value, bucket_id, settings, before):
        raise problem


Refusal = tuple[int | None, InvalidHook]
"""A hook's index (None for the list of hooks itself) and why writing it is refused."""


def refusals(
    metadata: Mapping[str, Any], bucket_id: str, settings: EmailerSettings
) -> list[Refusal]:
    """Every reason why the hooks of ``metadata`` would be refused if written today."""
    if METADATA_KEY not in metadata:
        return []
    return list(_problems(metadata[METADATA_KEY], bucket_id, settings, None))


def _problems(
    value: Any, bucket_id: str, settings: EmailerSettings, before: Any
) -> Iterator[Refusal]:
    """Why writing ``value`` (the ``kinto-emailer`` JSON) over ``before`` is refused: a
    problem of the list itself, else one per hook added or changed."""
    if not isinstance(before, Mapping):
        before = {}
    if isinstance(value, Mapping):
        # Keys beside the hooks (refused) that are stored as they are stay unchecked.
        value = {
            k: v for k, v in value.items() if k == "hooks" or k not in before or before[k] != v
        }
    try:
        _check_schema(_LIST_VALIDATOR, value)
    except InvalidHook as e:
        yield None, e
        return
    hooks = value["hooks"]
    stored_hooks = before.get("hooks")
    if not isinstance(stored_hooks, list):
        stored_hooks = []
    if len(hooks) > len(stored_hooks):
        problem = _too_many(len(hooks), settings)
        if problem is not None:
            yield None, InvalidHook(_path("hooks"), problem)
    for index, raw in enumerate(hooks):
        if raw in stored_hooks:
            continue
        try:
            parse_new(raw, index, bucket_id, settings)
        except InvalidHook as e:
            yield index, e


def parse_new(raw: Any, index: int, bucket_id: str, settings: EmailerSettings) -> Hook:
    """The hook that saving ``raw`` as hook ``index`` of ``bucket_id`` stores; InvalidHook
    naming the JSON path of its first problem, as the save answers."""
    hook = parse_stored(raw, index, bucket_id, settings)
    _check_bounds(raw, index, settings)
    return hook


def parse_stored(raw: Any, index: int, bucket_id: str, settings: EmailerSettings) -> Hook:
    """The hook that ``raw``, stored as hook ``index``, is used as: the operator's bounds
    that saving refuses apply instead (see :func:`_check_bounds`); InvalidHook if it is
    skipped."""
    _check_schema(_HOOK_VALIDATOR, raw, "hooks", index)
    return parse_hook(raw, index, bucket_id, settings)


def declared(metadata: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` holds any hook, usable or not: a check without parsing them."""
    value = metadata.get(METADATA_KEY)
    return isinstance(value, dict) and bool(value.get("hooks"))


def load(
    metadata: Mapping[str, Any], bucket_id: str, settings: EmailerSettings, scope: str
) -> tuple[Hook, ...]:
    """The usable hooks of ``metadata``, kept at ``scope`` (the URI of its bucket or
    collection); those that today's checks refuse are skipped with a warning naming them."""
    if METADATA_KEY not in metadata:
        return ()
    text = json.dumps(metadata[METADATA_KEY], sort_keys=True)
    hooks, problems = _load(text, bucket_id, settings)
    for skipped, reason in problems:
        logger.warning("Skipping %s of %s: %s", skipped, scope, reason)
    return hooks


HOOKS_CACHE_CHARS = 8_000_000
"""Hook JSON texts kept parsed, in characters: one text above a million is parsed at each
change rather than kept."""


@caching.sized_cache(HOOKS_CACHE_CHARS)
def _load(
    text: str, bucket_id: str, settings: EmailerSettings
) -> tuple[tuple[Hook, ...], tuple[tuple[str, str], ...]]:
    """The usable hooks of ``text``, and what was skipped with why."""
    # Parsed once per process for the same JSON: the events of a busy collection share it.
    value = json.loads(text)
    raw_hooks = value.get("hooks") if isinstance(value, dict) else None
    if not isinstance(raw_hooks, list):
        return (), (("the hooks", f"{_path('hooks')}: no list of hooks"),)
    hooks, problems = [], []
    problem = _too_many(len(raw_hooks), settings)
    if problem is not None:
        problems.append((f"the hooks after the first {settings.max_hooks}", problem))
    for index, raw in enumerate(raw_hooks[: settings.max_hooks]):
        try:
            hooks.append(parse_stored(raw, index, bucket_id, settings))
        except InvalidHook as e:
            problems.append((f"hook {index}", str(e)))
    return tuple(hooks), tuple(problems)
