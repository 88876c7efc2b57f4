"""What a Remote Settings deployment meets beside us: its other configuration, its plugins."""

import importlib.metadata
import os
import subprocess
import sys

import requests

from functional.remote_settings.servers import CONFIG, SIGNER_KEY, environment
from functional.server import running_kinto


def test_testing_ini_starts(tmp_path):
    """config/testing.ini, made to run out of the box, starts with every plugin it names."""
    # Its key path is the one of Remote Settings' container image.
    env = environment(KINTO_SIGNER_ECDSA_PRIVATE_KEY=SIGNER_KEY)
    config = os.path.join(CONFIG, "testing.ini")
    with running_kinto(config, env, str(tmp_path / "server.log"), cwd=str(tmp_path)) as url:
        capabilities = requests.get(f"{url}/", timeout=10).json()["capabilities"]
    assert {"signer", "emailer", "attachments"} <= capabilities.keys()


def test_kinto_attachment_send_email_script_runs():
    """kinto-attachment (8.0.0 and 9.0.1) installs its own ``kinto-send-email`` script, the
    entry point of kinto-emailer 4.x: whichever of the two packages pip installs last wins."""
    [script] = [
        entry
        for entry in importlib.metadata.distribution("kinto-attachment").entry_points
        if entry.name == "kinto-send-email"
    ]
    # What the installed script runs, without arguments: it says how to call it.
    code = f"import sys; from {script.module} import {script.attr}; sys.exit({script.attr}())"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "usage:" in (result.stdout + result.stderr).lower()
