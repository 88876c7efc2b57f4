# From mozilla/remote-settings at commit 493d7f59cea9445c6d082944271c9e3a61571e68,
# file kinto-remote-settings/tests/signer/test_utils.py.
# Apache License 2.0 (functional/remote_settings/LICENSE); unchanged below.

import unittest
from unittest import mock

import cryptography.x509
import pytest
from kinto_remote_settings.signer import utils
from pyramid.exceptions import ConfigurationError


class ParseResourcesTest(unittest.TestCase):
    def test_missing_arrow_raises_an_exception(self):
        raw_resources = """
        foo bar
        """
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

    def test_non_local_first_argument_raises_an_exception(self):
        raw_resources = """
        foo -> bar
        bar -> baz
        """
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

    def test_malformed_url_raises_an_exception(self):
        raw_resources = """
        /buckets/sbid/scid -> /buckets/dbid/collections/dcid
        """
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

    def test_outnumbered_urls_raises_an_exception(self):
        raw_resources = (
            "/buckets/sbid/scid -> "
            "/buckets/dbid/collections/dcid -> "
            "/buckets/dbid/collections/dcid -> "
            "/buckets/sbid/scid"
        )
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

    def test_returned_resources_match_the_expected_format(self):
        raw_resources = """
        /buckets/sbid/collections/scid -> /buckets/dbid/collections/dcid
        """
        resources = utils.parse_resources(raw_resources)
        assert resources == {
            "/buckets/sbid/collections/scid": {
                "source": {"bucket": "sbid", "collection": "scid"},
                "destination": {"bucket": "dbid", "collection": "dcid"},
            }
        }

    def test_returned_resources_match_the_legacy_format(self):
        raw_resources = """
        sbid/scid -> dbid/dcid
        """
        resources = utils.parse_resources(raw_resources)
        assert resources == {
            "/buckets/sbid/collections/scid": {
                "source": {"bucket": "sbid", "collection": "scid"},
                "destination": {"bucket": "dbid", "collection": "dcid"},
            }
        }

        raw_resources = """
        sbid/scid ; dbid/dcid
        """
        resources = utils.parse_resources(raw_resources)
        assert resources == {
            "/buckets/sbid/collections/scid": {
                "source": {"bucket": "sbid", "collection": "scid"},
                "destination": {"bucket": "dbid", "collection": "dcid"},
            }
        }

    def test_spaces_are_supported(self):
        raw_resources = """
        /buckets/bid1/collections/scid1 -> /buckets/bid1/collections/dcid1
        /buckets/bid2/collections/scid2 -> /buckets/bid2/collections/dcid2
        """
        resources = utils.parse_resources(raw_resources)
        assert len(resources) == 2
        assert (
            resources["/buckets/bid1/collections/scid1"]["source"]["bucket"] == "bid1"
        )
        assert (
            resources["/buckets/bid2/collections/scid2"]["source"]["bucket"] == "bid2"
        )

    def test_multiple_resources_are_supported(self):
        raw_resources = """
        /buckets/sbid1/collections/scid1 -> /buckets/dbid1/collections/dcid1
        /buckets/sbid2/collections/scid2 -> /buckets/dbid2/collections/dcid2
        """
        resources = utils.parse_resources(raw_resources)
        assert len(resources) == 2

    def test_a_preview_collection_is_supported(self):
        raw_resources = (
            "/buckets/stage/collections/cid -> "
            "/buckets/preview/collections/cid -> "
            "/buckets/prod/collections/cid -> "
        )
        resources = utils.parse_resources(raw_resources)
        assert resources == {
            "/buckets/stage/collections/cid": {
                "source": {"bucket": "stage", "collection": "cid"},
                "preview": {"bucket": "preview", "collection": "cid"},
                "destination": {"bucket": "prod", "collection": "cid"},
            }
        }

    def test_resources_should_be_space_separated(self):
        raw_resources = (
            "/buckets/sbid1/collections/scid -> /buckets/dbid1/collections/dcid,"
            "/buckets/sbid2/collections/scid -> /buckets/dbid2/collections/dcid"
        )
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

        raw_resources = "sbid1/scid -> dbid1/dcid,sbid2/scid -> dbid2/dcid"
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

    def test_resources_must_be_valid_names(self):
        raw_resources = (
            "/buckets/sbi+d1/collections/scid -> /buckets/dbid1/collections/dci,d"
        )
        with pytest.raises(
            ConfigurationError,
            match="Malformed resource: bucket or collection id is invalid",
        ):
            utils.parse_resources(raw_resources)

    def test_resources_can_be_defined_per_bucket(self):
        raw_resources = "/buckets/stage -> /buckets/preview -> /buckets/prod"
        resources = utils.parse_resources(raw_resources)
        assert resources == {
            "/buckets/stage": {
                "source": {"bucket": "stage", "collection": None},
                "preview": {"bucket": "preview", "collection": None},
                "destination": {"bucket": "prod", "collection": None},
            }
        }

    def test_cannot_mix_per_bucket_and_per_collection(self):
        raw_resources = "/buckets/stage -> /buckets/prod/collections/boom"
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

        raw_resources = (
            "/buckets/stage/collections/boom -> "
            "/buckets/preview/collections/boom -> "
            "/buckets/prod"
        )
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

        raw_resources = (
            "/buckets/stage -> /buckets/preview/collections/boom -> /buckets/prod"
        )
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

        raw_resources = "/buckets/stage/collections/boom -> /buckets/prod"
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

    def test_cannot_repeat_source_preview_or_destination(self):
        raw_resources = "/buckets/stage -> /buckets/stage -> /buckets/prod"
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

        raw_resources = "/buckets/stage -> /buckets/preview -> /buckets/stage"
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

        raw_resources = "/buckets/stage -> /buckets/preview -> /buckets/preview"
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

    def test_cannot_repeat_resources(self):
        # Repeated source.
        raw_resources = """
        /buckets/stage -> /buckets/preview1 -> /buckets/prod1
        /buckets/stage -> /buckets/preview2 -> /buckets/prod2
        """
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

        # Repeated reviews.
        raw_resources = """
        /buckets/stage1 -> /buckets/preview -> /buckets/prod1
        /buckets/stage2 -> /buckets/preview -> /buckets/prod2
        """
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

        # Repeated destination.
        raw_resources = """
        /buckets/stage1 -> /buckets/prod
        /buckets/stage2 -> /buckets/preview -> /buckets/prod
        """
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

        # Source in other's preview.
        raw_resources = """
        /buckets/stage -> /buckets/preview -> /buckets/prod
        /buckets/bid1  -> /buckets/stage   -> /buckets/bid2
        """
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

        # Source in other's destination.
        raw_resources = """
    /buckets/b/collections/c  -> /buckets/b/collections/c2 -> /buckets/b/collections/c3
    /buckets/b/collections/ca -> /buckets/b/collections/cb -> /buckets/b/collections/c
        """
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)

        # Preview in other's destination.
        raw_resources = """
    /buckets/b/collections/c0 -> /buckets/b/collections/c1 -> /buckets/b/collections/c2
    /buckets/b/collections/ca -> /buckets/b/collections/cb -> /buckets/b/collections/c1
        """
        with pytest.raises(ConfigurationError):
            utils.parse_resources(raw_resources)


def test_expand_collections_glob_settings():
    settings = {
        "signer.some_setting": "foo",
        "signer.some-bucket.to_review_enabled": False,
        "signer.main-workspace.intermediates.to_review_enabled": True,
        "signer.main-workspace.quicksuggest-(\\w+)-(desktop|mobile).to_review_enabled": True,
        "signer.main-workspace.quicksuggest-(\\w+)-(desktop|mobile).some_other": 42,
    }

    storage = mock.MagicMock()
    storage.list_all.side_effect = (
        [{"id": "security-state"}, {"id": "main-workspace"}, {"id": "main"}],
        [
            {"id": "intermediates"},
        ],
        [
            {"id": "quicksuggest-fr-mobile"},
            {"id": "quicksuggest-en-desktop"},
            {"id": "quicksuggest-fr-tablet"},
        ],
        [],
    )

    expanded_settings = utils.expand_collections_glob_settings(storage, settings)

    assert expanded_settings == {
        "signer.main-workspace.quicksuggest-fr-mobile.to_review_enabled": True,
        "signer.main-workspace.quicksuggest-en-desktop.to_review_enabled": True,
        "signer.main-workspace.quicksuggest-(\\w+)-(desktop|mobile).some_other": 42,
        "signer.main-workspace.intermediates.to_review_enabled": True,
        "signer.some-bucket.to_review_enabled": False,
        "signer.some_setting": "foo",
    }


# spellchecker:off  # noqa: ERA001
CERT_PEM = """-----BEGIN CERTIFICATE-----
MIIC8zCCAnmgAwIBAgIIGGahTB7ZjAEwCgYIKoZIzj0EAwMwgZExCzAJBgNVBAYT
AlVTMRwwGgYDVQQKExNNb3ppbGxhIENvcnBvcmF0aW9uMT0wOwYDVQQLEzRNb3pp
bGxhIENvbnRlbnQgU2lnbmF0dXJlIFByb2R1Y3Rpb24gU2lnbmluZyBTZXJ2aWNl
MSUwIwYDVQQDExxDb250ZW50IFNpZ25pbmcgSW50ZXJtZWRpYXRlMB4XDTI1MDgy
MDA4MjA1MloXDTI1MTEwODA4MjA1MlowgakxCzAJBgNVBAYTAlVTMRMwEQYDVQQI
EwpDYWxpZm9ybmlhMRYwFAYDVQQHEw1Nb3VudGFpbiBWaWV3MRwwGgYDVQQKExNN
b3ppbGxhIENvcnBvcmF0aW9uMRcwFQYDVQQLEw5DbG91ZCBTZXJ2aWNlczE2MDQG
A1UEAxMtcmVtb3RlLXNldHRpbmdzLmNvbnRlbnQtc2lnbmF0dXJlLm1vemlsbGEu
b3JnMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEaRzLFtF9lwzMvKwfhLHCFbr/Nawc
ZbsKoKh1mgkMf2AuhdqfzLK8NwkJurws4JW5waNbngV4CcHTNEfFh4edqtFJNZ2B
0Lr771xiDju90TzfczfaUrEacWMZ0kiydWbPo4GDMIGAMA4GA1UdDwEB/wQEAwIH
gDATBgNVHSUEDDAKBggrBgEFBQcDAzAfBgNVHSMEGDAWgBRYxR116Nzt8ryAtGbr
6rke+PVUBDA4BgNVHREEMTAvgi1yZW1vdGUtc2V0dGluZ3MuY29udGVudC1zaWdu
YXR1cmUubW96aWxsYS5vcmcwCgYIKoZIzj0EAwMDaAAwZQIxAI4W6H/bkmfPH6Rb
pnMhAJ0cY4J9RNss/K4qDAsmXZqW+6X4+ypewLu7L3cqqvVhkwIwKWhK1duubw0H
W1fctdT/ReRcPz/W6vwR/YF9km1eoE/aZmktKmJos08cbythx22O
-----END CERTIFICATE-----
"""
# spellchecker:on  # noqa: ERA001


def test_fetch_cert():
    with mock.patch("kinto_remote_settings.signer.utils.ssl") as mocked_ssl:
        mocked_ssl.get_server_certificate.return_value = CERT_PEM

        cert = utils.fetch_cert("https://example.com/cert")
        mocked_ssl.get_server_certificate.assert_called_with(("example.com", 443))
        assert (
            cert.subject.get_attributes_for_oid(cryptography.x509.NameOID.COMMON_NAME)[
                0
            ].value
            == "remote-settings.content-signature.mozilla.org"
        )


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        # No records
        ([], [], 0),
        # No attachments
        ([{"id": "a"}, {"id": "b"}], [{"id": "c"}], 0),
        # Deleted attachment
        (
            [{"id": "1", "attachment": None}],
            [{"id": "1", "attachment": {"location": "file1", "size": 100}}],
            -100,
        ),
        # Previously deleted attachment
        (
            [{"id": "1", "attachment": {"location": "file1", "size": 100}}],
            [{"id": "1", "attachment": None}],
            100,
        ),
        # Created and deleted attachment
        (
            [{"id": "1", "attachment": None}],
            [],
            0,
        ),
        # No change
        (
            [
                {"id": "1", "attachment": {"location": "file1", "size": 100}},
            ],
            [
                {"id": "2", "attachment": {"location": "file1", "size": 100}},
            ],
            0,
        ),
        # New file
        (
            [
                {"id": "1", "attachment": {"location": "file1", "size": 100}},
                {"id": "2", "attachment": {"location": "file2", "size": 200}},
            ],
            [
                {"id": "1", "attachment": {"location": "file1", "size": 100}},
            ],
            200,
        ),
        # 2 new attachments
        (
            [
                {"id": "1", "attachment": {"location": "a", "size": 50}},
                {"id": "2", "attachment": {"location": "b", "size": 75}},
                {"id": "3", "attachment": {"location": "c", "size": 25}},
            ],
            [
                {"id": "1", "attachment": {"location": "a", "size": 50}},
            ],
            100,  # b + c
        ),
        (
            [
                {"id": "1"},
                {"id": "2", "attachment": {"location": "x", "size": 30}},
            ],
            [],
            30,
        ),
        (
            [],
            [{"id": "1", "attachment": {"location": "a", "size": 1}}],
            0,
        ),
    ],
)
def test_attachments_size_diff(left, right, expected):
    assert utils.attachments_size_diff(left, right) == expected
