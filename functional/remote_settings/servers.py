"""What a Remote Settings server started here needs: its plugins and configs."""

import os


HERE = os.path.dirname(os.path.abspath(__file__))
# Remote Settings' plugins (kinto_remote_settings, kinto_slack): not published on PyPI.
SRC = os.path.join(HERE, "src")
CONFIG = os.path.join(HERE, "config")
# The throwaway key of Remote Settings' signer tests, for its local ECDSA signer.
SIGNER_KEY = os.path.join(HERE, "signer", "ecdsa.private.pem")


def environment(**settings: str) -> dict[str, str]:
    """This process's environment, with Remote Settings' plugins importable and ``settings``.

    Kinto reads ``KINTO_*`` variables over the keys of the ini file, as Remote Settings'
    docker-compose.yml sets them.
    """
    path = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **settings}
