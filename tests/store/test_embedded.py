"""The embedded SeaweedFS server: start, reuse, restart with data kept, stop only what lepton started."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from lepton_core.store import EmbeddedStore, ObjectStore, StoreError


@pytest.fixture
def server(tmp_path: Path):
    s = EmbeddedStore(tmp_path / "store")
    try:
        yield s
    finally:
        s.down()


def test_data_survives_a_restart(server: EmbeddedStore) -> None:
    first = server.up()
    assert first.running and first.endpoint_url.startswith("http://127.0.0.1:")
    store = ObjectStore(server.settings())
    store.ensure_bucket("keep")
    store.put_bytes("keep", "model/weights.bin", b"\x00\x01" * 1000)
    assert server.down() is True
    assert not server.status().running
    with pytest.raises(StoreError, match="not running"):
        server.settings()
    again = server.up()
    assert again.pid != first.pid
    assert again.endpoint_url == first.endpoint_url  # the old ports were free, so they are reused
    assert ObjectStore(server.settings()).get_bytes("keep", "model/weights.bin") == b"\x00\x01" * 1000


def test_a_start_is_judged_by_the_process_not_by_proc_cmdline(server: EmbeddedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc/PID/cmdline of a freshly exec'd process reads empty for a moment (about 1 start in 70
    on a 2-core machine): a start that saw it was taken for a crash and killed, failing CI."""
    real = EmbeddedStore._ours_alive
    monkeypatch.setattr(EmbeddedStore, "_ours_alive", lambda self, record: False)  # that moment, all along
    server.up()
    monkeypatch.setattr(EmbeddedStore, "_ours_alive", real)
    assert server.status().running


def test_a_stopped_server_leaves_nothing_in_tmp(server: EmbeddedStore) -> None:
    """SeaweedFS opens Unix sockets at fixed /tmp paths, removed only on a graceful stop, and logs to
    files in /tmp unless told otherwise: each start used to leave both behind."""
    from lepton_core.store.embedded import socket_paths

    pid = server.up().pid
    sockets = socket_paths(json.loads(server.server_file.read_text())["ports"])
    assert any(p.exists() for p in sockets)  # the paths are the ones it uses
    server.down()
    assert [p for p in sockets if p.exists()] == []
    assert list(Path("/tmp").glob(f"weed.*.{pid}")) == []
    assert "Start Seaweed Master" in server.log_file.read_text()  # its log went to weed.log instead


def test_sockets_of_a_server_killed_from_outside_are_removed(server: EmbeddedStore) -> None:
    """A server SIGKILLed from outside leaves its Unix sockets in /tmp; the next `down` (or `up`)
    sweeps them."""
    import signal
    import time

    from lepton_core.store.embedded import _gone, socket_paths

    pid = server.up().pid
    sockets = socket_paths(json.loads(server.server_file.read_text())["ports"])
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(p.exists() for p in sockets)  # what the kill leaves
    assert server.down() is False  # nothing of ours was running
    assert [p for p in sockets if p.exists()] == []


def test_a_socket_someone_listens_on_is_kept(tmp_path: Path) -> None:
    """Another SeaweedFS may have taken a dead server's port, and with it the socket's path: only
    sockets nothing listens on are swept."""
    import socket

    from lepton_core.store.embedded import socket_paths

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (path,) = socket_paths({"s3.port": port})
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen()
        EmbeddedStore._remove_sockets({"ports": {"s3.port": port}}, stale_only=True)
        assert path.exists()  # someone is listening: not ours to remove
        listener.close()  # the file stays, as a killed server's does
        assert path.exists()
        EmbeddedStore._remove_sockets({"ports": {"s3.port": port}}, stale_only=True)
        assert not path.exists()
    finally:
        listener.close()
        path.unlink(missing_ok=True)


def test_data_survives_a_restart_on_new_ports(server: EmbeddedStore) -> None:
    import socket

    first = server.up()
    ObjectStore(server.settings()).ensure_bucket("moved")
    ObjectStore(server.settings()).put_bytes("moved", "k", b"v")
    server.down()
    port = int(first.endpoint_url.rsplit(":", 1)[1])
    with socket.socket() as blocker:  # someone else now holds the old S3 port
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # it may still be in TIME_WAIT
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        again = server.up()
        assert again.endpoint_url != first.endpoint_url
        assert ObjectStore(server.settings()).get_bytes("moved", "k") == b"v"


def test_each_bucket_grows_one_volume_whatever_the_free_disk(server: EmbeddedStore) -> None:
    """SeaweedFS's defaults (seven volumes per bucket, a volume count sized from the free disk) ran
    out of volumes on a CI machine with little free disk: every PUT failed after long waits."""
    server.up()
    store = ObjectStore(server.settings())
    for i in range(12):
        store.ensure_bucket(f"bucket-{i:02d}")
        store.put_bytes(f"bucket-{i:02d}", "k", b"v" * 100)
    assert len(list(server.data_dir.glob("*.dat"))) == 12


def test_refuses_to_start_on_a_nearly_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lepton_core.store import embedded

    monkeypatch.setattr(embedded, "MIN_FREE_BYTES", 1 << 62)
    s = EmbeddedStore(tmp_path / "store")
    with pytest.raises(StoreError, match=r"not enough free disk for the embedded object store: \d+ MiB free under .*data"):
        s.up()
    assert not s.status().running


def test_second_up_reuses_the_running_server(server: EmbeddedStore) -> None:
    first = server.up()
    second = EmbeddedStore(server.root).up()
    assert second.pid == first.pid and second.endpoint_url == first.endpoint_url


def test_binds_loopback_only(server: EmbeddedStore) -> None:
    st = server.up()
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    ours = [line for line in out.splitlines() if f"pid={st.pid}," in line]
    assert len(ours) >= 8
    assert all(line.split()[3].startswith("127.0.0.1:") for line in ours), ours


def test_credentials_are_private_and_never_shown(server: EmbeddedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    server.up()
    assert stat.S_IMODE(server.credentials_file.stat().st_mode) == 0o600
    key_id, secret = server.credentials()
    monkeypatch.setenv("LEPTON_HOME", str(server.root.parent))
    result = CliRunner().invoke(app, ["store", "status"])
    assert result.exit_code == 0
    assert f"access key id: {key_id}" in result.stdout
    assert secret.get_secret_value() not in result.stdout
    assert secret.get_secret_value() not in server.log_file.read_text(errors="replace")
    assert server._sse_key() not in server.log_file.read_text(errors="replace")
    assert secret.get_secret_value() not in server.server_file.read_text()


def test_down_stops_only_the_server_lepton_started(server: EmbeddedStore, tmp_path: Path) -> None:
    # A record that points at some other process (a pid reused after a crash, say): down leaves it alone.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        server.root.mkdir(parents=True)
        server.server_file.write_text(json.dumps({"pid": other.pid, "ports": {"s3.port": 1}}))
        assert server.status().running is False
        assert server.down() is False
        assert other.poll() is None
        assert json.loads(server.server_file.read_text())["pid"] is None
    finally:
        other.kill()
        other.wait()
    # Two lepton state folders: stopping one leaves the other serving.
    mine = server.up()
    theirs = EmbeddedStore(tmp_path / "elsewhere")
    try:
        theirs.up()
        assert server.down() is True
        assert theirs.status().running
        ObjectStore(theirs.settings()).ping()
        assert not Path(f"/proc/{mine.pid}").exists() or b"weed" not in Path(f"/proc/{mine.pid}/cmdline").read_bytes()
    finally:
        theirs.down()


def test_cli_up_status_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    try:
        up = runner.invoke(app, ["store", "up"])
        assert up.exit_code == 0 and "embedded store: running" in up.stdout
        status = runner.invoke(app, ["store", "status"])
        assert "endpoint: http://127.0.0.1:" in status.stdout
    finally:
        down = runner.invoke(app, ["store", "down"])
    assert down.stdout == "embedded store stopped\n"
    assert runner.invoke(app, ["store", "down"]).stdout == "embedded store was not running\n"
    assert runner.invoke(app, ["store", "status"]).stdout.startswith("embedded store: stopped")


def test_start_failure_is_reported_not_hung(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "weed"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'cannot start: disk full' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr("lepton_core.store.embedded.weed_binary", lambda: str(fake))
    s = EmbeddedStore(tmp_path / "store")
    with pytest.raises(StoreError, match=r"exited during start-up \(exit code 3\); see .*weed\.log"):
        s.up(timeout=10)
    assert "disk full" in s.log_file.read_text()
    assert not s.status().running and json.loads(s.server_file.read_text())["pid"] is None


def test_server_started_by_another_process_is_stopped_completely(tmp_path: Path) -> None:
    from lepton_core.store.embedded import _port_free

    env = {**os.environ, "LEPTON_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "store", "up"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    server = EmbeddedStore(tmp_path / "home" / "store")
    status = server.status()
    assert status.running  # it outlived the command that started it
    ports = json.loads(server.server_file.read_text())["ports"]
    try:
        ObjectStore(server.settings()).ping()
    finally:
        assert server.down() is True
    assert all(_port_free(p) for p in ports.values())  # every listener is closed when down returns


def test_a_start_rotates_a_large_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """weed.log is appended to by every start; past LOG_ROTATE_BYTES a start moves it aside (one kept)."""
    from lepton_core.store import embedded

    fake = tmp_path / "weed"
    fake.write_text("#!/bin/sh\necho 'this start' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(embedded, "weed_binary", lambda: str(fake))
    s = EmbeddedStore(tmp_path / "store")
    s.root.mkdir()
    s.log_file.write_text("an earlier start\n")
    with pytest.raises(StoreError):
        s.up(timeout=10)
    assert s.log_file.read_text() == "an earlier start\nthis start\n"  # small: appended to
    with open(s.log_file, "ab") as f:
        f.truncate(embedded.LOG_ROTATE_BYTES)
    with pytest.raises(StoreError):
        s.up(timeout=10)
    assert s.log_file.read_text() == "this start\n"
    old = s.log_file.with_name("weed.log.1")
    assert old.stat().st_size == embedded.LOG_ROTATE_BYTES and old.read_bytes().startswith(b"an earlier start")
