# From mozilla/remote-settings at commit 493d7f59cea9445c6d082944271c9e3a61571e68,
# file kinto-remote-settings/tests/signer/test_generate_keypair.py.
# Apache License 2.0 (functional/remote_settings/LICENSE); unchanged below.

import os
import tempfile
import unittest

from kinto_remote_settings.signer.backends.local_ecdsa import ECDSASigner
from kinto_remote_settings.signer.generate_keypair import generate_keypair


class KeyPairGeneratorTest(unittest.TestCase):
    def test_generated_keypairs_can_be_loaded(self):
        fd, private_key_location = tempfile.mkstemp(suffix="private_key")
        os.close(fd)
        fd, public_key_location = tempfile.mkstemp(suffix="public_key")
        os.close(fd)

        generate_keypair(private_key_location, public_key_location)
        backend = ECDSASigner(private_key=private_key_location)
        backend.sign("test")
