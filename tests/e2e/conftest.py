"""What the end-to-end tests share: a user's environment, `lepton` as a separate process, and a
real `prefect server start` on a free 127.0.0.1 port with its own PREFECT_HOME."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
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


@contextlib.contextmanager
def running_prefect_server(env: dict[str, str], database_url: str | None = None) -> Iterator[str]:
    """A `prefect server start` on a free 127.0.0.1 port (SQLite in its PREFECT_HOME, or the
    database at ``database_url``); yields its API URL (``.../api``) and stops it afterwards."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    # the UI it serves calls the API at this address (its default is port 4200)
    server_env = {**env, "PREFECT_UI_API_URL": api}
    # No scheduler: a test sees only the runs it starts, whatever the hour. Turning a deployment's
    # schedules off and deleting their runs did not do it: a scheduler loop already under way
    # inserted its runs after the deletion (a CI failure in test_postgres.py).
    server_env["PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED"] = "false"
    if database_url:
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    # its log beside its database, for a test's failure message (server_log_tail)
    log = open(Path(env["PREFECT_HOME"]) / "server.log", "ab")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
        log.close()


def server_log_tail(env: dict[str, str], chars: int = 4000) -> str:
    """The end of the log of the server that ``running_prefect_server(env)`` started."""
    path = Path(env["PREFECT_HOME"]) / "server.log"
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no server log)"


@pytest.fixture
def prefect_server(user_env: dict[str, str]) -> Iterator[str]:
    """A `prefect server start` (SQLite) for one test; yields its API URL (``.../api``)."""
    with running_prefect_server(user_env) as api:
        yield api


def lepton(args: list[str], env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL cluster (Debian's postgresql package) on a free 127.0.0.1 port, in a
    folder of its own under /tmp, with an empty database; yields its asyncpg URL for Prefect.
    As root the cluster runs as the package's `postgres` user (PostgreSQL refuses to run as root)."""
    initdbs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not initdbs:
        if os.environ.get("CI"):
            pytest.fail("Debian's postgresql is not installed (make test installs it as root)")
        pytest.skip("Debian's postgresql is not installed (apt-get install postgresql)")
    bindir = initdbs[-1].parent
    data = Path(tempfile.mkdtemp(prefix="lepton-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(data, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*args: str) -> None:
        proc = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
    # a throwaway cluster: no fsync (a commit need not survive a power cut here), so the server's
    # many small transactions do not wait on the disk when other work is writing to it
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w",
        "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off", "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "prefect")
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(data, ignore_errors=True)


def psql(database_url: str, query: str) -> str:
    """One query's result (unaligned, no headers) from the database at ``database_url`` (as above)."""
    m = re.match(r"postgresql\+asyncpg://(\w+)@([\d.]+):(\d+)/(\w+)$", database_url)
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))[-1].parent
    proc = subprocess.run([str(bindir / "psql"), "-h", m.group(2), "-p", m.group(3), "-U", m.group(1), "-d", m.group(4), "-tAc", query],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def deploy_one(env: dict[str, str], repo: Path, name: str) -> None:
    """The pools and limit, then one deployment of ``deployments/prefect.yaml``, on the server ``env`` names."""
    for cmd in ([sys.executable, "deployments/setup.py"],
                [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--name", name]):
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
