"""Hooks are checked when bucket or collection metadata is written.

Kinto notifies ``ResourceChanged`` after its storage backend wrote the object, and the
memory backend cannot roll a write back. Kinto's resources work out the final object (after
a PATCH, a merge or a JSON-Patch) and write it in the same view, with no hook in between:
a view deriver or a tween would have to work that object out again, and batch subrequests
skip tweens. So the check sits on the backend's own ``create`` and ``update``, where the
final object is known before anything is written: a refused write stores nothing, on any
backend, whoever makes it.

``registry.storage`` stays Kinto's backend: only those methods of the instance are
wrapped (``get`` too on the memory backend, see :func:`guard`). The wrappers take every
argument the backend takes and pass them on untouched, keep its signatures, and are
methods still, so that Kinto's metrics time them under the backend's own name.
"""

import copy
import functools
import inspect
import types
from collections.abc import Callable, Mapping
from typing import Any

from kinto.core.errors import json_error_handler
from kinto.core.storage.exceptions import ObjectNotFoundError
from pyramid.httpexceptions import HTTPException
from pyramid.request import Request

from kinto_emailer import hooks
from kinto_emailer.errors import InvalidInput
from kinto_emailer.settings import EmailerSettings


_CHECKED = ("bucket", "collection")
# Keywords Kinto's backends still take for the current ones (its deprecate_kwargs).
_RENAMED = {"collection_id": "resource_name", "record": "obj"}

Arguments = Mapping[str, Any]
Method = Callable[..., Any]


def _arguments(signature: inspect.Signature, args: tuple, kwargs: dict) -> Arguments | None:
    """A call's arguments by the backend's names; None for a call the backend refuses
    (it raises its own error)."""
    named = {
        _RENAMED[k] if k in _RENAMED and _RENAMED[k] not in kwargs else k: v
        for k, v in kwargs.items()
    }
    try:
        return signature.bind(*args, **named).arguments
    except TypeError:
        return None


def _bucket_id(arguments: Arguments) -> str:
    if arguments["resource_name"] == "bucket":
        return str(arguments.get("object_id") or arguments["obj"].get("id", ""))
    return str(arguments["parent_id"]).rsplit("/", 1)[-1]


def _replace(storage: Any, name: str, wrap: Callable[[Method, inspect.Signature], Method]) -> None:
    """Replace the method ``name`` of ``storage`` (the instance only) by ``wrap``'s."""
    method = getattr(storage, name)
    function = wrap(method, inspect.signature(method))
    # The backend's name, docstring and signature (self included: it stays a method).
    functools.update_wrapper(function, method.__func__)
    setattr(storage, name, types.MethodType(function, storage))


def guard(storage: Any, settings: EmailerSettings) -> None:
    """Refuse the bucket and collection writes of ``storage`` that add or change invalid
    hooks."""
    get = storage.get  # The backend's own: what it answers is only read.

    def stored(arguments: Arguments) -> Mapping[str, Any] | None:
        try:
            return get(  # type: ignore[no-any-return]
                resource_name=arguments["resource_name"],
                parent_id=arguments["parent_id"],
                object_id=arguments["object_id"],
            )
        except ObjectNotFoundError:
            return None

    def checked(method: Method, signature: inspect.Signature) -> Method:
        def write(self: Any, *args: Any, **kwargs: Any) -> Any:
            arguments = _arguments(signature, args, kwargs)
            if arguments is not None and arguments["resource_name"] in _CHECKED:
                obj = arguments["obj"]
                if hooks.METADATA_KEY in obj:
                    # An update is checked for what it changes in the stored hooks.
                    before = stored(arguments) if "object_id" in arguments else None
                    hooks.validate(obj, _bucket_id(arguments), settings, before)
            return method(*args, **kwargs)

        return write

    def deep_get(method: Method, signature: inspect.Signature) -> Method:
        def get(self: Any, *args: Any, **kwargs: Any) -> Any:
            obj = method(*args, **kwargs)
            # Named, as Kinto and the plugin read: no binding, which costs more than the read.
            named = "resource_name" in kwargs
            arguments = kwargs if named else _arguments(signature, args, kwargs)
            if arguments is not None and arguments["resource_name"] in _CHECKED:
                return copy.deepcopy(obj)
            return obj

        return get

    _replace(storage, "create", checked)
    _replace(storage, "update", checked)
    # The memory backend returns shallow copies: a PATCH that merges into nested
    # metadata would change the stored object before the check could refuse it.
    if type(storage).__module__ == "kinto.core.storage.memory":
        _replace(storage, "get", deep_get)


def invalid_input_view(exc: InvalidInput, request: Request) -> HTTPException:
    """A 400 in Kinto's error format (as ``raise_invalid``), naming the bad value's JSON path."""
    request.errors.add("body", exc.path, exc.description)
    return json_error_handler(request)
