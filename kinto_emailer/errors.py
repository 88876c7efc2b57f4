"""The one exception tree of the package."""


class EmailerError(Exception):
    """Base of every error raised by kinto_emailer."""


class InvalidInput(EmailerError):
    """A request's body holds a value that cannot be accepted (a 400).

    ``path`` is the dotted JSON path of the offending value (for example ``object.id``).
    """

    def __init__(self, path: str, description: str) -> None:
        super().__init__(f"{path}: {description}")
        self.path = path
        self.description = description


class InvalidHook(InvalidInput):
    """Hook settings that cannot be accepted.

    ``path`` is relative to the object's ``data`` (for example
    ``data.kinto-emailer.hooks.0.template``).
    """


class RenderError(EmailerError):
    """A hook stored before validation existed cannot be rendered for an event."""


class InvalidLink(EmailerError):
    """A link of an email that was forged, altered (``expired`` False) or is too old."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired
