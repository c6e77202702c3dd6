"""The ObjectStore interface against a real SeaweedFS server."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from lepton_core.errors import is_transient
from lepton_core.store import ObjectNotFound, ObjectStore, S3Uri, StoreAuthError, StoreError, StoreSettings


def test_put_get_head_list_delete(store: ObjectStore) -> None:
    b = store.bucket
    data = b"digits \xf0\x9f\x94\xa2"
    info = store.put_bytes(b, "a/nested/x y.bin", data, metadata={"sha256": hashlib.sha256(data).hexdigest()})
    assert info.sha256_b64 == base64.b64encode(hashlib.sha256(data).digest()).decode()
    store.put_bytes(b, "a/empty", b"")
    store.put_bytes(b, "b/other", b"2")
    assert store.get_bytes(b, "a/nested/x y.bin") == data
    head = store.head(b, "a/nested/x y.bin")
    assert head is not None and head.size == len(data)
    assert head.metadata == {"sha256": hashlib.sha256(data).hexdigest()}
    assert head.sha256_b64 == info.sha256_b64
    assert [(o.key, o.size) for o in store.list(b, "a/")] == [("a/empty", 0), ("a/nested/x y.bin", len(data))]
    store.delete(b, "a/empty")
    assert store.head(b, "a/empty") is None
    assert store.delete_prefix(b, "a/") == 1
    assert [o.key for o in store.list(b)] == ["b/other"]


def test_objects_are_encrypted_at_rest_when_asked(store: ObjectStore) -> None:
    store.put_bytes(store.bucket, "enc", b"secret data")
    r = store.client.head_object(Bucket=store.bucket, Key="enc")
    assert r["ServerSideEncryption"] == "AES256"


def test_file_round_trip_with_multipart(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(9 * 1024 * 1024))  # over boto3's 8 MiB multipart threshold
    info = store.put_file(store.bucket, "big.bin", src)
    assert info.size == src.stat().st_size
    dest = store.download_file(store.bucket, "big.bin", tmp_path / "out" / "big.bin")
    assert dest.read_bytes() == src.read_bytes()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["big.bin"]  # no temporary left behind


def test_missing_object_and_bucket(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound, match=r"get s3://.*/nope: not found"):
        store.get_bytes(store.bucket, "nope")
    with pytest.raises(ObjectNotFound):
        store.download_file(store.bucket, "nope", tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
    assert list(tmp_path.iterdir()) == []


def test_ensure_bucket_is_idempotent(store: ObjectStore) -> None:
    assert store.ensure_bucket("lepton-idem") is True
    assert store.ensure_bucket("lepton-idem") is False


def test_wrong_secret_is_rejected_without_showing_it(embedded) -> None:
    good = embedded.settings()
    bad = StoreSettings(endpoint_url=good.endpoint_url, region=good.region, access_key_id=good.access_key_id,
                        secret_access_key="not-the-secret")
    with pytest.raises(StoreAuthError) as err:
        ObjectStore(bad).ping()
    message = str(err.value)
    assert "rejected the credentials" in message and good.access_key_id in message
    assert "not-the-secret" not in message and good.secret_access_key.get_secret_value() not in message
    assert not is_transient(err.value)
    assert "not-the-secret" not in repr(bad) and "not-the-secret" not in str(bad.model_dump())


def test_unknown_key_id_is_rejected(embedded) -> None:
    good = embedded.settings()
    bad = StoreSettings(endpoint_url=good.endpoint_url, access_key_id="NOSUCHKEY", secret_access_key="x")
    with pytest.raises(StoreAuthError, match="NOSUCHKEY"):
        ObjectStore(bad).ping()


def test_unreachable_server_is_a_transient_error() -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = ObjectStore(StoreSettings(endpoint_url=f"http://127.0.0.1:{port}", access_key_id="k", secret_access_key="s"))
    with pytest.raises(StoreError, match=f"cannot reach the object store at http://127.0.0.1:{port}") as err:
        store.ping()
    assert is_transient(err.value)


def test_clients_share_one_reading_of_the_service_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.loaders

    from lepton_core.store import objectstore

    reads: list[str] = []
    real = botocore.loaders.JSONFileLoader.load_file
    monkeypatch.setattr(botocore.loaders.JSONFileLoader, "load_file", lambda self, path: reads.append(path) or real(self, path))
    objectstore._data_loader.cache_clear()
    settings = StoreSettings(endpoint_url="http://127.0.0.1:9", access_key_id="k", secret_access_key="s")
    ObjectStore(settings)
    first = len(reads)
    assert any("s3" in r for r in reads)  # the first client read S3's model from botocore's data files
    ObjectStore(settings)
    assert len(reads) == first  # the second read nothing
    monkeypatch.setenv("AWS_DATA_PATH", "/nonexistent")
    ObjectStore(settings)
    assert len(reads) > first  # another data path is another loader


def test_s3_uri_parsing() -> None:
    assert S3Uri.parse("s3://bucket/a/b.png") == S3Uri("bucket", "a/b.png")
    assert str(S3Uri.parse("s3://bucket")) == "s3://bucket/"
    with pytest.raises(ValueError, match="not an s3:// URI"):
        S3Uri.parse("/local/path")


def test_list_all_finds_exactly_what_one_listing_finds(store: ObjectStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    b = store.bucket
    # (not both "a/b" and "a/b/c": SeaweedFS keeps a file and a folder of one name apart, so which
    # of the two survives depends on the order of the writes)
    keys = ["top.bin", "a/b/c", "a//double", "a/x y/ü+%.png", "a/deep/er/still/k", "ab/not-under-a",
            *(f"a/many/{i:05d}" for i in range(1100))]  # more than one page in one folder
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: store.put_bytes(b, k, k.encode()), keys))
    for prefix in ("", "a/", "a", "a/many/", "a/deep/", "missing/"):
        one = [(o.key, o.size, o.etag) for o in store.list(b, prefix)]
        assert [k for k, _, _ in one] == sorted(k for k, _, _ in one)  # key order
        for threads in (1, 2, 4):
            for depth in (1, 2, 3):
                many = [(o.key, o.size, o.etag) for o in store.list_all(b, prefix, threads=threads, max_depth=depth)]
                assert many == one, (prefix, threads, depth)
    # every key written, once (SeaweedFS stores "a//double" as "a/double")
    assert [o.key for o in store.list_all(b, "")] == sorted(k.replace("//", "/") for k in keys)
    assert [o.key for o in store.list_all(b, "a")][-1] == "ab/not-under-a"  # a prefix, not a folder


def test_list_all_does_not_list_folder_by_folder_where_that_costs_more_requests(store: ObjectStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    b = store.bucket
    requests: list[dict] = []
    store.client.meta.events.register("before-parameter-build.s3.ListObjectsV2", lambda params, **_: requests.append(dict(params)))
    one_each = [f"ids/{i:04d}/image.png" for i in range(300)]  # a folder per object
    spread = [f"splits/{s}/{c}/{i:03d}" for s in ("train", "test") for c in range(6) for i in range(20)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: store.put_bytes(b, k, b"x"), one_each + spread))

    assert [o.key for o in store.list_all(b, "ids/")] == one_each
    # one delimited request found 300 folders: more than max_folders, so one plain listing, not 300
    assert len(requests) == 2 and "Delimiter" in requests[0] and "Delimiter" not in requests[1]

    requests.clear()
    assert [o.key for o in store.list_all(b, "splits/")] == sorted(spread)
    walked = [r for r in requests if "Delimiter" in r]
    assert len(walked) == 3 and len(requests) == 3 + 12  # splits/, its two splits; then 12 folders in full
    assert sorted(r["Prefix"] for r in requests if "Delimiter" not in r) == sorted(f"splits/{s}/{c}/" for s in ("train", "test") for c in range(6))
