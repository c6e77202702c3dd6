"""`lepton run` as a user runs it: a separate process, with Prefect ephemeral and with a real server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lepton_core.store import EmbeddedStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def user_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a user's shell with its own lepton and Prefect homes; the embedded store
    that the run leaves running is stopped at the end."""
    (tmp_path / "prefect").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(LEPTON_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect"))
    try:
        yield env
    finally:
        EmbeddedStore(tmp_path / "home" / "store").down()


def lepton(args: list[str], env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


def report_of(proc: subprocess.CompletedProcess) -> Path:
    line = next(l for l in proc.stdout.splitlines() if l.startswith("migration finished; report: "))
    return Path(line.split(": ", 1)[1])


def test_run_with_an_ephemeral_prefect(demo_relaxed: Path, user_env: dict[str, str]) -> None:
    proc = lepton(["run", str(demo_relaxed), "--plan-seconds", "2", "--adapt-epochs", "1"], user_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = report_of(proc)
    assert report.is_file() and "- status: **ok**" in report.read_text()
    assert "the embedded object store is still running at http://127.0.0.1:" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_run_against_a_prefect_server(demo_relaxed: Path, user_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**user_env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
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
        env = {**user_env, "PREFECT_API_URL": api, "PREFECT_SERVER_EPHEMERAL_ENABLED": "false"}
        proc = lepton(["run", str(demo_relaxed), "--prefix", "e2e", "--plan-seconds", "2", "--adapt-epochs", "1"], env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Starting temporary server" not in proc.stdout + proc.stderr
        # the run is recorded in that server, Completed, with its report artifact
        body = json.dumps({"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}).encode()
        req = urllib.request.Request(f"{api}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            runs = json.load(r)
        assert len(runs) == 1
        req = urllib.request.Request(f"{api}/artifacts/filter", data=json.dumps({}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            artifacts = json.load(r)
        gates = [f"validation-{side}-{d}" for side in ("source", "target") for d in ("digits-cloud", "digits-onprem", "request-log")]
        assert sorted(a["key"] for a in artifacts if a["key"]) == sorted(["migration-report", "migration-plan", "drift-digits-cloud",
                                                                              "model-adaptation", "parity", *gates])
        assert sorted(a["type"] for a in artifacts if not a["key"]) == ["progress"] * 3  # one per dataset copy
        assert report_of(proc).is_file()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_bad_spec_fails_before_prefect_starts(demo_data: Path, user_env: dict[str, str]) -> None:
    bad = demo_data.parent / "bad-e2e.yaml"
    bad.write_text(demo_data.read_text().replace("bucket: lepton-demo", "bucket: Bad_Bucket"))
    proc = lepton(["run", str(bad)], user_env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {bad}:") and "target.bucket: must be 3-63 characters" in proc.stderr
    assert proc.stdout == ""  # nothing ran: no Prefect server was started, no flow run logged
