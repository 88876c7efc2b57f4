# From mozilla/remote-settings at commit 493d7f59cea9445c6d082944271c9e3a61571e68,
# file kinto-remote-settings/src/kinto_remote_settings/signer/backends/base.py.
# Apache License 2.0 (functional/remote_settings/LICENSE); unchanged below.

from typing import Any


class SignerBase(object):
    def healthcheck(self, request: Any) -> None:
        """
        Performs a series of checks for this signing backend.
        """
        raise NotImplementedError

    def sign(self, payload: str | bytes) -> list[dict]:
        """
        Signs the specified `payload` and returns the signature metadata.

        :returns: A list of mappings with every attributes about the signatures
            (e.g. "signature", "hash_algorithm", "signature_encoding"...)
        :rtype: list[dict]
        """
        raise NotImplementedError
