# From mozilla/remote-settings at commit 493d7f59cea9445c6d082944271c9e3a61571e68,
# file kinto-remote-settings/src/kinto_remote_settings/testing/mock_listener.py.
# Apache License 2.0 (functional/remote_settings/LICENSE); unchanged below.

"""
This module provides a mock for signer tests. Normally a file like this would
be defined in a tests directory separate from this src directory, but to
provide this module, Kinto expects to find it in a package found in
`site-packages`.
"""

from typing import Any


class Listener(object):
    def __init__(self) -> None:
        self.received: list[Any] = []

    def __call__(self, event: Any) -> None:
        self.received.append(event)


listener = Listener()


def load_from_config(config: Any, prefix: str) -> Listener:
    return listener
