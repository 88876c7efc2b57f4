# From mozilla/remote-settings at commit 493d7f59cea9445c6d082944271c9e3a61571e68,
# file kinto-remote-settings/src/kinto_remote_settings/signer/backends/autograph.py.
# Apache License 2.0 (functional/remote_settings/LICENSE); unchanged below.

import base64
import datetime
import logging
import warnings
from typing import Any
from urllib.parse import urljoin

import requests
from pyramid.settings import aslist
from requests_hawk import HawkAuth

from ..utils import fetch_cert, get_first_matching_setting
from .base import SignerBase


logger = logging.getLogger(__name__)


SIGNATURE_FIELDS = ["signature", "x5u"]
EXTRA_SIGNATURE_FIELDS = ["mode", "public_key", "type", "signer_id", "ref"]


class AutographSigner(SignerBase):
    def __init__(
        self, server_url: str, hawk_id: str, hawk_secret: str, keyids: list[str]
    ) -> None:
        self.server_url = server_url
        self.auth = HawkAuth(id=hawk_id, key=hawk_secret)
        # List of keys to use for signing.
        self.key_ids = keyids

    def healthcheck(self, request: Any) -> None:
        if not self.server_url.startswith("https"):
            # No certificate to check if not connected via HTTPs.
            return

        settings = request.registry.settings
        percentage_remaining_validity = int(
            settings.get(
                "signer.heartbeat_certificate_percentage_remaining_validity", 5
            )
        )
        min_remaining_days = int(
            settings.get("signer.heartbeat_certificate_min_remaining_days", 10)
        )
        max_remaining_days = int(
            settings.get("signer.heartbeat_certificate_max_remaining_days", 30)
        )

        # Check the server certificate validity.
        cert = fetch_cert(self.server_url)
        start = cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)
        end = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
        utcnow = datetime.datetime.now(datetime.timezone.utc)
        remaining_days = (end - utcnow).days
        lifespan = (end - start).days

        # The minimum remaining days depends on the certificate lifespan.
        relative_minimum = lifespan * percentage_remaining_validity / 100
        # We don't want to alert to much in advance, nor too late, hence we bound it.
        clamped_minimum = int(
            min(max_remaining_days, max(min_remaining_days, relative_minimum))
        )
        if remaining_days <= clamped_minimum:
            msg = "Only %s days before Autograph certificate expires (%s)"
            logger.warning(msg, remaining_days, end)

        logger.info(
            f"Certificate lasts {lifespan} days and ends in {remaining_days} days "
            f"({remaining_days - clamped_minimum} days before alert)."
        )

    def sign(self, payload: str | bytes) -> list[dict]:
        if isinstance(payload, str):  # pragma: no cover
            payload = payload.encode("utf-8")

        b64_payload = base64.b64encode(payload)
        url = urljoin(self.server_url, "/sign/data")

        # Iterate over the configured keys, and return the list of
        # signatures obtained from Autograph.
        signatures = []
        for key_id in self.key_ids:
            logger.info(
                "Sign %s bytes using Autograph %s with key %r",
                len(b64_payload),
                url,
                key_id,
            )
            resp = requests.post(
                url,
                auth=self.auth,
                json=[
                    {
                        "input": b64_payload.decode("utf-8"),
                        "keyid": key_id,
                    }
                ],
            )
            resp.raise_for_status()
            signature_bundle = resp.json()[0]

            # Critical fields must be present, will raise if missing.
            infos = {field: signature_bundle[field] for field in SIGNATURE_FIELDS}
            # Other fields are returned and will be stored as part of the signature.
            # but client won't break if they are missing, so don't raise.
            infos.update(
                **{
                    field: signature_bundle[field]
                    for field in EXTRA_SIGNATURE_FIELDS
                    if field in signature_bundle
                }
            )
            logger.info(
                "Obtained %s response from Autograph %s",
                resp.status_code,
                signature_bundle["ref"],
            )
            signatures.append(infos)
        return signatures


def load_from_settings(
    settings: dict, prefix: str = "", *, prefixes: list[str] | None = None
) -> AutographSigner:
    if prefixes is None:
        prefixes = [prefix]

    if prefix != "":
        message = (
            "signer.load_from_settings `prefix` parameter is deprecated, please "
            "use `prefixes` instead."
        )
        warnings.warn(message, DeprecationWarning)

    return AutographSigner(
        server_url=get_first_matching_setting(
            "autograph.server_url", settings, prefixes
        ),
        hawk_id=get_first_matching_setting("autograph.hawk_id", settings, prefixes),
        hawk_secret=get_first_matching_setting(
            "autograph.hawk_secret", settings, prefixes
        ),
        keyids=aslist(
            get_first_matching_setting(
                "autograph.key_ids",
                settings,
                prefixes,
                default="remote-settings",
            )
        ),
    )
