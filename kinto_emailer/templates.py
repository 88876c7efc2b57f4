"""Format-string templates: checked when hooks are saved, rendered with bounded output.

Templates keep the ``str.format`` syntax of the original plugin, but only named
placeholders from a fixed list are accepted, format specs are bounded, and attribute
access is refused: a template can show values of the one object an email is about,
never the server's internals.
"""

import json
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kinto_emailer import caching
from kinto_emailer.errors import InvalidHook, RenderError
from kinto_emailer.headers import header_value


SCALAR_PLACEHOLDERS = (
    "action",
    "bucket_id",
    "client_address",
    "collection_id",
    "event",
    "group_id",
    "id",
    "record_id",
    "resource_name",
    "root_url",
    "timestamp",
    "uri",
    "user_agent",
    "user_id",
)
"""Placeholders with one value, computed for the object the email is about."""

REVIEW_PLACEHOLDERS = ("changes_count", "changes_size_bytes", "comment")
"""Extra payload keys of the review events of Kinto's signer (empty for other events)."""

INTEGER_PLACEHOLDERS = ("timestamp", "changes_count", "changes_size_bytes")
"""Placeholders whose values are integers; the others are text, and so are checked
``{new[...]}`` and ``{old[...]}`` fields, whose values may be any JSON."""
_SAMPLES: dict[type, tuple[object, ...]] = {
    # -1 and a timestamp are out of the range of {:c}: the spec fails some values.
    int: (0, -1, 1_700_000_000_000),
    str: ("text",),
}

SETTINGS_KEYS = ("project_name", "project_version", "url")
"""Server settings a template may show, as ``{settings[project_name]}`` (those of 4.x)."""

OBJECT_VERSIONS = ("new", "old")
"""``{new[field]}`` and ``{old[field]}``: a field of the object after and before the change."""

MAX_FIELD_DEPTH = 3
"""``{new[a][b][c]}`` at the most."""
MAX_SPEC_NUMBER = 100
"""Largest width or precision allowed in a format spec."""
MAX_VALUE_LENGTH = 1000
"""Characters of one placeholder's value, before its format spec is applied."""
MAX_BODY_LENGTH = 65_536
"""Characters of a rendered body; the rest is cut and marked."""
MAX_LINE_LENGTH = 255
"""Characters of a rendered header value (subject, sender)."""

_SPEC = re.compile(
    r"""
    \A
    (?:(?P<fill>[^{}])?(?P<align>[<>=^]))?
    (?P<sign>[-+\ ])?
    z?
    \#?
    0?
    (?P<width>\d+)?
    [,_]?
    (?:\.(?P<precision>\d+))?
    (?P<type>[bcdeEfFgGnosxX%])?
    \Z
    """,
    re.VERBOSE,
)
_FIELD_NAME = re.compile(r"\A(?P<name>[^.\[\]]*)(?P<keys>(?:\[[^\]]+\])*)\Z")
_FIELD_KEY = re.compile(r"\[([^\]]+)\]")
_TRUNCATED = " [...]"


def allowed_placeholders() -> str:
    """A human-readable list of what templates may use, for error messages and docs."""
    names = [f"{{{name}}}" for name in SCALAR_PLACEHOLDERS + REVIEW_PLACEHOLDERS]
    names += [f"{{{version}[<field>]}}" for version in OBJECT_VERSIONS]
    names += [f"{{settings[{key}]}}" for key in SETTINGS_KEYS]
    return ", ".join(names)


@dataclass(frozen=True)
class _Field:
    name: str
    keys: tuple[str, ...]
    spec: str
    text_spec: str
    """What of ``spec`` suits any text: the fallback for a value the spec cannot format."""

    @property
    def source(self) -> str:
        """The field as a template writes it: ``{new[title]:.50}``."""
        keys = "".join(f"[{key}]" for key in self.keys)
        return f"{{{self.name}{keys}{':' if self.spec else ''}{self.spec}}}"


def _text_spec(spec: re.Match[str]) -> str:
    """Alignment, width and, unless the spec is numeric, precision: valid for any text."""
    align = {"=": ">"}.get(spec["align"], spec["align"])
    text = f"{spec['fill'] or ''}{align}" if align else ""
    text += spec["width"] or ""
    if spec["precision"] is not None and spec["type"] in (None, "s"):
        text += f".{spec['precision']}"
    return text


def _check_field(field_name: str, spec: str, conversion: str | None) -> _Field:
    if field_name == "" or field_name.isdigit():
        raise ValueError("positional fields such as {} or {0} are not allowed: name a placeholder")
    match = _FIELD_NAME.match(field_name)
    if match is None:
        if "." in field_name:
            raise ValueError(f"attribute access in {{{field_name}}} is not allowed")
        raise ValueError(f"invalid field {{{field_name}}}")
    first = match["name"]
    keys = _FIELD_KEY.findall(match["keys"])
    if conversion is not None:
        raise ValueError(f"conversion !{conversion} in {{{field_name}}} is not allowed")

    if first in SCALAR_PLACEHOLDERS or first in REVIEW_PLACEHOLDERS:
        if keys:
            raise ValueError(f"{{{first}}} has no fields to index")
    elif first == "settings":
        if len(keys) != 1 or keys[0] not in SETTINGS_KEYS:
            allowed = ", ".join(f"{{settings[{k}]}}" for k in SETTINGS_KEYS)
            raise ValueError(f"{{{field_name}}} is not allowed (allowed: {allowed})")
    elif first in OBJECT_VERSIONS:
        if not keys or len(keys) > MAX_FIELD_DEPTH:
            raise ValueError(
                f"{{{first}}} needs one to {MAX_FIELD_DEPTH} fields, as in {{{first}[title]}}"
            )
    else:
        raise ValueError(f"unknown placeholder {{{first}}}")

    if "{" in spec:
        raise ValueError(f"nested fields in the format spec of {{{field_name}}} are not allowed")
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(f"invalid format spec {spec!r} in {{{field_name}}}")
    for number in (match["width"], match["precision"]):
        if number is not None and int(number) > MAX_SPEC_NUMBER:
            raise ValueError(
                f"width and precision in {{{field_name}:{spec}}} are limited to {MAX_SPEC_NUMBER}"
            )
    # The values of every event: a spec that fails one would fail at use, mailing nobody.
    for sample in _SAMPLES[int if first in INTEGER_PLACEHOLDERS else str]:
        try:
            format(sample, spec)
        except (ValueError, TypeError, OverflowError) as e:
            kind = "an integer" if isinstance(sample, int) else "text"
            raise ValueError(f"cannot format {{{field_name}:{spec}}}: {e} ({kind})") from e
    return _Field(first, tuple(keys), spec, _text_spec(match))


TEMPLATES_CACHE_CHARS = 4_000_000
"""Templates kept parsed, in characters: at least 60 of the longest a template may be."""


@caching.sized_cache(TEMPLATES_CACHE_CHARS)
def parse(template: str) -> tuple[str | _Field, ...]:
    """Split a template into literal text and checked fields; raise ValueError if unsafe."""
    if len(template) > MAX_BODY_LENGTH:
        raise ValueError(f"at most {MAX_BODY_LENGTH} characters, not {len(template)}")
    pieces: list[str | _Field] = []
    for literal, field_name, spec, conversion in string.Formatter().parse(template):
        if literal:
            pieces.append(literal)
        if field_name is not None:
            pieces.append(_check_field(field_name, spec or "", conversion))
    return tuple(pieces)


def check(template: str, path: str) -> None:
    """Raise :class:`InvalidHook` naming ``path`` when ``template`` is not safe to render."""
    try:
        parse(template)
    except ValueError as e:
        raise InvalidHook(
            path,
            f"{e}. Allowed placeholders: {allowed_placeholders()}; write {{{{ and }}}} "
            "for literal braces.",
        ) from e


def placeholder_count(template: str) -> int:
    """How many placeholders a checked template holds."""
    return sum(1 for piece in parse(template) if isinstance(piece, _Field))


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - len(_TRUNCATED)] + _TRUNCATED


def _lookup(field: _Field, context: Mapping[str, Any]) -> Any:
    value: Any = context.get(field.name)
    for key in field.keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, str):
        return _clip(value, MAX_VALUE_LENGTH)
    return value


def _format(field: _Field, value: Any) -> str:
    try:
        return format(value, field.spec)
    except (ValueError, TypeError, OverflowError):
        # A value of another type than the check's (a number in {new[n]:.5}, a missing
        # {changes_count:d}): its text, aligned and cut as the spec says.
        return format(value if isinstance(value, str) else format(value), field.text_spec)


def render(
    template: str,
    context: Mapping[str, Any],
    limit: int = MAX_BODY_LENGTH,
    escape: Callable[[str], str] | None = None,
) -> str:
    """Render ``template``: missing values are empty, output is at most ``limit`` characters;
    each placeholder's text goes through ``escape``, if given.

    Raises :class:`RenderError` only for a template that fails the checks (stored before
    they existed): whatever the values, a checked template renders.
    """
    try:
        pieces = parse(template)
    except ValueError as e:
        raise RenderError(str(e)) from e
    output: list[str] = []
    size = 0
    for piece in pieces:
        if isinstance(piece, str):
            text = piece
        else:
            text = _format(piece, _lookup(piece, context))
            if escape is not None:
                text = escape(text)
        output.append(text)
        size += len(text)
        if size > limit:
            break
    return _clip("".join(output), limit)


def render_line(template: str, context: Mapping[str, Any]) -> str:
    """Render a header value (:func:`header_value`), at most :data:`MAX_LINE_LENGTH` long."""
    return _clip(header_value(render(template, context)), MAX_LINE_LENGTH)
