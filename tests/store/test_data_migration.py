"""Data migration against a real SeaweedFS server: round trips, re-runs, resume, corruption, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lepton_core.data.crt import MULTIPART_THRESHOLD, CrtTransfer
from lepton_core.data.engine import dataset_prefix, download_dataset, read_manifest, upload_dataset
from lepton_core.data.inventory import HashCache
from lepton_core.data.manifest import MANIFEST_NAME
from lepton_core.errors import UsageError, is_transient
from lepton_core.store import ObjectStore, StoreAuthError, StoreError, StoreSettings


@pytest.fixture
def tools(store: ObjectStore, tmp_path: Path):
    transfer = CrtTransfer(store.settings, encryption="AES256")
    cache = HashCache(tmp_path / "hashes.sqlite")
    yield store, transfer, cache
    cache.close()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


ODD = {
    "train/cat/a b.png": b"\x89PNG" + os.urandom(3000),
    "train/cät/ü ñ 漢字.png": os.urandom(1234),
    "train/dog/empty.png": b"",
    "val/deep/er/still/x+y=z&w%20.bin": os.urandom(70_000),
    "README (copy).txt": b"hello",
}


def test_round_trip_with_odd_names_and_empty_files(tools, tmp_path: Path) -> None:
    store, transfer, cache = tools
    src = write_tree(tmp_path / "src", ODD)
    prefix = dataset_prefix("mig", "odd")
    s = upload_dataset("odd", src, store, transfer, store.bucket, prefix, cache)
    assert (s.objects, s.sent, s.skipped, s.resent) == (5, 5, 0, 0)
    manifest = read_manifest(store, store.bucket, prefix)
    assert sorted(e.rel for e in manifest.objects) == sorted(ODD)
    head = store.client.head_object(Bucket=store.bucket, Key=f"{prefix}/train/cät/ü ñ 漢字.png")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"]["sha256"] == next(e.sha256 for e in manifest.objects if e.rel == "train/cät/ü ñ 漢字.png")
    back = download_dataset(store, transfer, store.bucket, prefix, tmp_path / "back")
    assert back.sent == 5
    for rel, data in ODD.items():
        assert (tmp_path / "back" / rel).read_bytes() == data
    assert not list((tmp_path / "back").rglob(".*.part"))
    again = download_dataset(store, transfer, store.bucket, prefix, tmp_path / "back")
    assert (again.sent, again.skipped) == (0, 5)


def test_file_over_the_multipart_threshold(tools, tmp_path: Path) -> None:
    store, transfer, cache = tools
    big = os.urandom(MULTIPART_THRESHOLD + 5 * 1024 * 1024)
    src = write_tree(tmp_path / "src", {"big.bin": big, "small.bin": b"x"})
    prefix = dataset_prefix("mig", "big")
    upload_dataset("big", src, store, transfer, store.bucket, prefix, cache)
    head = store.client.head_object(Bucket=store.bucket, Key=f"{prefix}/big.bin")
    assert head["ContentLength"] == len(big) and "-" in head["ETag"]  # really multipart
    assert head["ServerSideEncryption"] == "AES256" and len(head["Metadata"]["sha256"]) == 64
    download_dataset(store, transfer, store.bucket, prefix, tmp_path / "back")
    assert (tmp_path / "back" / "big.bin").read_bytes() == big


def test_rerun_with_nothing_changed_sends_nothing(tools, tmp_path: Path) -> None:
    store, transfer, cache = tools
    src = write_tree(tmp_path / "src", {f"d{i % 5}/f{i}.bin": os.urandom(1000 + i) for i in range(60)})
    prefix = dataset_prefix("mig", "rerun")
    upload_dataset("rerun", src, store, transfer, store.bucket, prefix, cache)
    before = {o.key: o.last_modified for o in store.list(store.bucket, prefix + "/")}
    again = upload_dataset("rerun", src, store, transfer, store.bucket, prefix, cache)
    assert (again.sent, again.skipped, again.resent) == (0, 60, 0)
    assert {o.key: o.last_modified for o in store.list(store.bucket, prefix + "/")} == before  # manifest not rewritten either
    # a changed and an added file are the only ones sent
    (src / "d0" / "f0.bin").write_bytes(b"changed")
    (src / "new.bin").write_bytes(b"new")
    third = upload_dataset("rerun", src, store, transfer, store.bucket, prefix, cache)
    assert (third.sent, third.resent, third.skipped) == (2, 1, 59)
    assert third.resent_keys == [f"{prefix}/d0/f0.bin"]
    assert third.extra_on_target == 0
    # a file removed from the source: its object stays, is left out of the manifest, and is reported
    (src / "d1" / "f1.bin").unlink()
    fourth = upload_dataset("rerun", src, store, transfer, store.bucket, prefix, cache)
    assert (fourth.sent, fourth.extra_on_target) == (0, 1)
    assert "1 object on the target that the source does not have (kept)" in fourth.line()
    assert f"{prefix}/d1/f1.bin" not in read_manifest(store, store.bucket, prefix).by_key()


def test_corrupted_and_truncated_objects_are_detected_and_resent(tools, tmp_path: Path) -> None:
    store, transfer, cache = tools
    files = {f"f{i}.bin": os.urandom(5000) for i in range(10)}
    src = write_tree(tmp_path / "src", files)
    prefix = dataset_prefix("mig", "corrupt")
    upload_dataset("corrupt", src, store, transfer, store.bucket, prefix, cache)
    store.client.put_object(Bucket=store.bucket, Key=f"{prefix}/f3.bin", Body=os.urandom(5000))  # same size, other bytes
    store.client.put_object(Bucket=store.bucket, Key=f"{prefix}/f7.bin", Body=files["f7.bin"][:100])  # truncated
    again = upload_dataset("corrupt", src, store, transfer, store.bucket, prefix, cache)
    assert again.resent_keys == [f"{prefix}/f3.bin", f"{prefix}/f7.bin"]
    assert (again.sent, again.skipped) == (2, 8)
    for name in ("f3.bin", "f7.bin"):
        assert store.get_bytes(store.bucket, f"{prefix}/{name}") == files[name]


KILL_SCRIPT = r"""
import os, sys, threading, time
from pathlib import Path
from lepton_core.data.crt import CrtTransfer
from lepton_core.data.engine import upload_dataset
from lepton_core.data.inventory import HashCache
from lepton_core.store import ObjectStore, StoreSettings

src, bucket, prefix, marker, endpoint, key, secret = sys.argv[1:]
settings = StoreSettings(endpoint_url=endpoint, access_key_id=key, secret_access_key=secret)
count = 0

class Stall:
    def start(self, files, nbytes): pass
    def advance(self, files, nbytes):
        global count
        count += files
        if count >= 100:  # enough finished: stop every transfer thread here and wait to be killed
            Path(marker).touch()
            time.sleep(3600)

upload_dataset("kill", src, ObjectStore(settings), CrtTransfer(settings), bucket, prefix, HashCache(Path(marker).with_suffix(".db")), Stall())
"""


def test_killed_run_resumes_without_resending_finished_objects(tools, tmp_path: Path) -> None:
    store, transfer, cache = tools
    total = 1500
    src = write_tree(tmp_path / "src", {f"p{i % 20:02d}/f{i:04d}.bin": os.urandom(4096) for i in range(total)})
    prefix = dataset_prefix("mig", "kill")
    marker = tmp_path / "stalled"
    s = store.settings
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(src), store.bucket, prefix, str(marker), s.endpoint_url,
                             s.access_key_id, s.secret_access_key.get_secret_value()], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the upload did not get going"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    present: dict = {}
    while True:  # the server may still be storing requests it had fully received: wait until it settles
        time.sleep(0.5)
        now = {o.key: (o.etag, o.last_modified) for o in store.list(store.bucket, prefix + "/")}
        if now == present:
            break
        present = now
    assert 100 <= len(present) < total
    assert read_manifest(store, store.bucket, prefix) is None  # no manifest for an incomplete copy
    resumed = upload_dataset("kill", src, store, transfer, store.bucket, prefix, cache)
    assert (resumed.skipped, resumed.sent, resumed.resent) == (len(present), total - len(present), 0)
    after = {o.key: (o.etag, o.last_modified) for o in store.list(store.bucket, prefix + "/") if not o.key.endswith(MANIFEST_NAME)}
    assert all(after[k] == v for k, v in present.items())  # nothing finished was sent again
    assert len(read_manifest(store, store.bucket, prefix).objects) == total


def test_wrong_credentials_fail_clearly_and_write_no_manifest(tools, tmp_path: Path) -> None:
    store, _, cache = tools
    src = write_tree(tmp_path / "src", {"a.bin": b"a", "b.bin": b"b"})
    bad = StoreSettings(endpoint_url=store.settings.endpoint_url, access_key_id=store.settings.access_key_id,
                        secret_access_key="wrong-secret")
    prefix = dataset_prefix("mig", "creds")
    with pytest.raises(StoreAuthError, match=r"rejected the credentials .*SignatureDoesNotMatch \(and 1 more failed object\)") as err:
        upload_dataset("creds", src, store, CrtTransfer(bad), store.bucket, prefix, cache)
    assert "wrong-secret" not in str(err.value) and not is_transient(err.value)
    assert read_manifest(store, store.bucket, prefix) is None


def test_server_down_is_transient_and_writes_nothing(tools, tmp_path: Path) -> None:
    import socket

    store, _, cache = tools
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = StoreSettings(endpoint_url=f"http://127.0.0.1:{port}", access_key_id="k", secret_access_key="s")
    src = write_tree(tmp_path / "src", {"a.bin": b"a"})
    with pytest.raises(StoreError, match=f"cannot reach the object store at http://127.0.0.1:{port}") as err:
        upload_dataset("down", src, ObjectStore(down), CrtTransfer(down), "any-bucket", "p", cache)
    assert is_transient(err.value)


def test_missing_source_and_empty_source(tools, tmp_path: Path) -> None:
    store, transfer, cache = tools
    with pytest.raises(UsageError, match=r"nowhere: source does not exist"):
        upload_dataset("x", tmp_path / "nowhere", store, transfer, store.bucket, "p", cache)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no files to migrate"):
        upload_dataset("x", tmp_path / "empty", store, transfer, store.bucket, "p", cache)


def test_download_without_a_manifest_is_refused(tools, tmp_path: Path) -> None:
    store, transfer, _ = tools
    with pytest.raises(UsageError, match=r"no complete copy there"):
        download_dataset(store, transfer, store.bucket, "never/uploaded", tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_unreadable_file_is_named(tools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, transfer, cache = tools
    src = write_tree(tmp_path / "src", {"ok.bin": b"1", "locked/secret.bin": b"2"})
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith("secret.bin") else real_access(p, mode))
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(src).st_uid + 1)  # not the owner, not root: the system is asked
    with pytest.raises(UsageError, match=r"locked/secret.bin: file is not readable"):
        upload_dataset("x", src, store, transfer, store.bucket, "p", cache)
    assert list(store.list(store.bucket, "p/")) == []  # refused before anything was sent


def test_bucket_the_server_refuses_is_a_clear_error(store: ObjectStore) -> None:
    with pytest.raises(StoreError, match=r"bucket 'Not_A_Bucket': InvalidBucketName") as err:
        store.ensure_bucket("Not_A_Bucket")
    assert not is_transient(err.value)


def test_cli_reports_a_down_server_in_one_line(demo_data: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = demo_data.parent / "bad-down.yaml"
    spec.write_text(demo_data.read_text().replace("endpoint_url: embedded", f"endpoint_url: http://127.0.0.1:{port}"))
    env = {**os.environ, "LEPTON_HOME": str(tmp_path / "home"), "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "migrate-data", str(spec), "--dataset", "request-log"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr == f"error: bucket 'lepton-demo': cannot reach the object store at http://127.0.0.1:{port} (EndpointConnectionError)\n"
