"""The server that Remote Settings' browser tests talk to, started here.

Upstream starts it in Docker from config/local.ini; here ``config/local-ecdsa.ini`` is that
file with a local signer, on memory storage, then on PostgreSQL (migrated first, as
``docker compose run web migrate`` does). Its debug mailer writes into ``mail/`` under its
working directory, which ``mail_dir`` names. These fixtures stand in for the ones of
``browser_tests/conftest.py`` that read ``--server`` and ``--mail-dir``.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from functional.remote_settings.servers import CONFIG, environment
from functional.server import kinto, running_kinto
from tests.support import IN_CI, POSTGRESQL_URL, postgresql_available


LOCAL = os.path.join(CONFIG, "local-ecdsa.ini")
DATABASE_URL = POSTGRESQL_URL + "_remote_settings_server"


@dataclass(frozen=True)
class Server:
    url: str
    mail_dir: str


def fresh_database(url: str) -> bool:
    """Drops the database of ``url`` and creates it again; False without a server."""
    admin_url, name = url.rsplit("/", 1)
    try:
        connection = psycopg2.connect(f"{admin_url}/postgres")
    except psycopg2.OperationalError:
        return False
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        connection.close()
    return postgresql_available(url)


def backends(url: str) -> dict[str, str]:
    return {
        f"KINTO_{kind.upper()}_{key}": value
        for kind in ("storage", "permission")
        for key, value in (("BACKEND", f"kinto.core.{kind}.postgresql"), ("URL", url))
    }


@pytest.fixture(scope="session", params=["memory", "postgresql"])
def local_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir: Path = tmp_path_factory.mktemp(f"remote-settings-{request.param}")
    (workdir / "mail").mkdir()
    env = environment()
    if request.param == "postgresql":
        if not fresh_database(DATABASE_URL) and not IN_CI:
            pytest.skip(f"no PostgreSQL at {DATABASE_URL}")
        env.update(backends(DATABASE_URL))
        kinto("migrate", config=LOCAL, env=env, cwd=str(workdir))
    with running_kinto(LOCAL, env, str(workdir / "server.log"), cwd=str(workdir)) as url:
        yield Server(url, str(workdir / "mail"))


@pytest.fixture(scope="session")
def server(local_server: Server) -> str:
    return local_server.url


@pytest.fixture(scope="session")
def mail_dir(local_server: Server) -> str:
    return local_server.mail_dir
