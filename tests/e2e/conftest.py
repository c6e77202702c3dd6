"""What the end-to-end tests share: a user's environment, `lepton` as a separate process, and a
real `prefect server start` on a free 127.0.0.1 port with its own PREFECT_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lepton_core.procs import free_port, stop_group
from lepton_core.store import EmbeddedStore


@pytest.fixture
def user_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a user's shell with its own lepton and Prefect homes; the embedded store
    that a run leaves running is stopped at the end."""
    (tmp_path / "prefect").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(LEPTON_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    try:
        yield env
    finally:
        EmbeddedStore(tmp_path / "home" / "store").down()


@pytest.fixture
def prefect_server(user_env: dict[str, str]) -> Iterator[str]:
    """A `prefect server start` for one test; yields its API URL (``.../api``)."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    # the UI it serves calls the API at this address (its default is port 4200)
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env={**user_env, "PREFECT_UI_API_URL": api}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "prefect server did not start"
            time.sleep(0.5)
        yield api
    finally:
        stop_group(server)


def lepton(args: list[str], env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)
