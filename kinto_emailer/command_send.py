"""The entry point of kinto-emailer 4.x's ``kinto-send-email``: kinto-attachment's packages
still install a script of that name that imports it."""

from kinto_emailer.scripts import send_email_main as main


__all__ = ["main"]
