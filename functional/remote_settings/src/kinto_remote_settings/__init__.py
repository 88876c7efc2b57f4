# From mozilla/remote-settings at commit 493d7f59cea9445c6d082944271c9e3a61571e68,
# file kinto-remote-settings/src/kinto_remote_settings/__init__.py.
# Apache License 2.0 (functional/remote_settings/LICENSE); unchanged below.

from pyramid.config import Configurator


def get_version() -> str:
    """
    Get the version of the application from the version file.
    """
    import json
    import os

    VERSION_FILE = os.getenv("VERSION_FILE", "version.json")
    if not os.path.exists(VERSION_FILE):
        return "0.0.0"

    with open(VERSION_FILE) as f:
        return json.load(f)["version"].replace("v", "").split("-")[0]


__version__ = get_version()


def includeme(config: Configurator) -> None:
    config.include("kinto_remote_settings.changes")
    config.include("kinto_remote_settings.signer")
