"""A small interface over boto3 for s3:// locations.

Endpoint, region and credentials come from boto3's normal chain unless given explicitly (the
embedded server); a secret is held as ``SecretStr`` and never logged, printed or put in an error.
Checksums are computed only where the operation requires one, so S3-compatible servers that
reject botocore's default CRC32 still work; callers that want an integrity checksum ask for
SHA-256 explicitly.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from lepton_core.errors import LeptonError
from lepton_core.fsutil import atomic_path
from lepton_core.gcpause import gc_paused

Encryption = Literal["none", "AES256", "aws:kms"]

_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed"}
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "503", "500", "502", "504"}


class StoreError(LeptonError):
    """The object store refused or failed an operation. ``transient`` errors may succeed if retried."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class StoreAuthError(StoreError):
    """The store rejected the credentials, or none were found."""


class ObjectNotFound(StoreError):
    """No object (or bucket) at that location."""


class PreconditionFailed(StoreError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


def error_for_code(what: str, code: str, message: str, settings: StoreSettings) -> StoreError:
    """The StoreError for an S3 error code (``AccessDenied``, ``SlowDown``, ``503``...)."""
    where = settings.display_endpoint
    if code in _AUTH_CODES:
        key_id = settings.access_key_id or "from the default chain"
        return StoreAuthError(f"{what}: the object store at {where} rejected the credentials (access key id {key_id}): {code}")
    if code in {"NoSuchKey", "404", "NotFound"}:
        return ObjectNotFound(f"{what}: not found")
    if code == "NoSuchBucket":
        return ObjectNotFound(f"{what}: bucket does not exist")
    if code in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}:
        return PreconditionFailed(f"{what}: the object changed since it was read ({code})")
    if code == "BadDigest":
        return StoreError(f"{what}: the bytes sent do not match their SHA-256 (did the file change during the upload?)", transient=True)
    return StoreError(f"{what}: {code}: {message}".rstrip(": "), transient=code in _TRANSIENT_CODES)


class StoreSettings(BaseModel):
    """How to reach an object store. Fields left out come from boto3's credential chain."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint_url: str | None = Field(default=None, description="S3 endpoint URL; None for AWS S3.")
    region: str = Field(default="us-east-1", description="Region to sign requests for.")
    access_key_id: str | None = Field(default=None, description="Access key id; None for boto3's chain.")
    secret_access_key: SecretStr | None = Field(default=None, description="Secret key; never shown.")

    @property
    def display_endpoint(self) -> str:
        return self.endpoint_url or f"AWS S3 ({self.region})"


@dataclass(frozen=True)
class S3Uri:
    """``s3://bucket/key``."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, key = uri[5:].partition("/")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class ObjectInfo:
    """What the store says about one object."""

    key: str
    size: int
    etag: str
    last_modified: str | None = None  # ISO 8601, as the server reports it
    metadata: dict[str, str] | None = None
    sha256_b64: str | None = None


def _listed(obj: dict[str, Any]) -> ObjectInfo:
    """An object as a listing's ``Contents`` entry describes it."""
    return ObjectInfo(key=obj["Key"], size=obj["Size"], etag=obj["ETag"].strip('"'), last_modified=obj.get("LastModified"))


@functools.cache
def _data_loader(data_path: str | None) -> Any:
    """botocore's loader of service models for ``data_path`` (AWS_DATA_PATH), made once."""
    import botocore.loaders

    return botocore.loaders.create_loader(data_path)


class ObjectStore:
    """Put, get, list and delete objects in one S3 endpoint, with errors as clear messages."""

    def __init__(self, settings: StoreSettings, *, encryption: Encryption = "none", kms_key_id: str | None = None,
                 max_pool_connections: int = 32) -> None:
        import boto3
        import botocore.session
        from botocore.config import Config

        self.settings = settings
        self.encryption = encryption
        self.kms_key_id = kms_key_id
        config = Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=max_pool_connections,
            s3={"addressing_style": "path"} if settings.endpoint_url else {},
        )
        secret = settings.secret_access_key.get_secret_value() if settings.secret_access_key else None
        from lepton_core.store.listing import FastListingParserFactory, use_quick_200_check

        core = botocore.session.get_session()
        # one data loader for the process: a session of its own reads and parses S3's service model
        # and endpoint rules again, 0.06-0.23 s a client here (boto3 shares one between a session's clients)
        core.register_component("data_loader", _data_loader(core.get_config_variable("data_path")))
        # Listings are read by converters compiled from the service model (see ``listing``), and
        # timestamps stay the server's ISO 8601 strings: botocore's generic XML reading and its date
        # parsing are most of the cost of listing thousands of objects, and lepton only compares them.
        parsers = FastListingParserFactory()
        parsers.set_parser_defaults(timestamp_parser=str)
        core.register_component("response_parser_factory", parsers)
        self.client = boto3.session.Session(botocore_session=core).client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=secret,
            config=config,
        )
        use_quick_200_check(self.client.meta.events)  # a whole listing page is not parsed twice (see ``listing``)

    def __repr__(self) -> str:
        return f"ObjectStore({self.settings.display_endpoint})"

    # -- errors -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn botocore's exceptions into StoreError subclasses with a one-line message."""
        from botocore import exceptions as bx

        where = self.settings.display_endpoint
        try:
            yield
        except bx.NoCredentialsError:
            raise StoreAuthError(f"{what}: no credentials found for {where} (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)") from None
        except (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.ConnectTimeoutError, bx.ReadTimeoutError) as exc:
            raise StoreError(f"{what}: cannot reach the object store at {where} ({type(exc).__name__})", transient=True) from None
        except bx.ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "")) or str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            raise error_for_code(what, code, str(err.get("Message", "")), self.settings) from None
        except bx.BotoCoreError as exc:
            raise StoreError(f"{what}: {exc}", transient=True) from None

    def ping(self) -> None:
        """One signed request (list buckets): raises StoreError unless the store answers and accepts us."""
        with self._errors("check the object store"):
            self.client.list_buckets()

    # -- buckets ----------------------------------------------------------------------------
    def ensure_bucket(self, bucket: str) -> bool:
        """Create ``bucket`` unless it exists; True when it was created."""
        from botocore.exceptions import ClientError

        with self._errors(f"bucket {bucket!r}"):
            try:
                self.client.head_bucket(Bucket=bucket)
                return False
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) not in {"404", "NoSuchBucket", "NotFound"}:
                    raise
            kwargs: dict[str, Any] = {"Bucket": bucket}
            if self.settings.endpoint_url is None and self.settings.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.region}
            try:
                self.client.create_bucket(**kwargs)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in {"BucketAlreadyOwnedByYou"}:
                    raise
            return True

    # -- objects ----------------------------------------------------------------------------
    def _put_args(self, metadata: dict[str, str] | None) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if metadata:
            args["Metadata"] = metadata
        if self.encryption != "none":
            args["ServerSideEncryption"] = self.encryption
            if self.kms_key_id:
                args["SSEKMSKeyId"] = self.kms_key_id
        return args

    def put_bytes(self, bucket: str, key: str, data: bytes, *, metadata: dict[str, str] | None = None,
                  content_type: str | None = None, if_match: str | None = None, if_absent: bool = False) -> ObjectInfo:
        """Write ``data`` to ``s3://bucket/key`` in one request, with a SHA-256 checksum the server verifies.
        A conditional write (``if_match``: only over the object with that ETag; ``if_absent``: only
        where there is none) raises PreconditionFailed when the condition does not hold."""
        args = self._put_args(metadata)
        if content_type:
            args["ContentType"] = content_type
        if if_match is not None:
            args["IfMatch"] = if_match if if_match.startswith('"') else f'"{if_match}"'
        if if_absent:
            args["IfNoneMatch"] = "*"
        with self._errors(f"put s3://{bucket}/{key}"):
            r = self.client.put_object(Bucket=bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256", **args)
        return ObjectInfo(key=key, size=len(data), etag=r["ETag"].strip('"'), metadata=metadata, sha256_b64=r.get("ChecksumSHA256"))

    def put_file(self, bucket: str, key: str, path: str | os.PathLike, *, metadata: dict[str, str] | None = None,
                 content_type: str | None = None) -> ObjectInfo:
        """Upload a file (multipart above boto3's threshold)."""
        args = self._put_args(metadata)
        if content_type:
            args["ContentType"] = content_type
        with self._errors(f"upload {path} to s3://{bucket}/{key}"):
            self.client.upload_file(str(path), bucket, key, ExtraArgs=args)
        info = self.head(bucket, key)
        if info is None:
            raise StoreError(f"upload {path} to s3://{bucket}/{key}: the object is missing after the upload", transient=True)
        return info

    def get_bytes(self, bucket: str, key: str) -> bytes:
        with self._errors(f"get s3://{bucket}/{key}"):
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def download_file(self, bucket: str, key: str, path: str | os.PathLike) -> Path:
        """Download to ``path`` atomically: a partial download never takes the final name."""
        with atomic_path(path) as tmp, self._errors(f"download s3://{bucket}/{key}"):
            self.client.download_file(bucket, key, str(tmp))
        return Path(path)

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's size, ETag, metadata and SHA-256 checksum, or None when it does not exist."""
        try:
            with self._errors(f"head s3://{bucket}/{key}"):
                r = self.client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except ObjectNotFound:
            return None
        return ObjectInfo(key=key, size=r["ContentLength"], etag=r["ETag"].strip('"'), last_modified=r.get("LastModified"),
                          metadata=r.get("Metadata") or {}, sha256_b64=r.get("ChecksumSHA256"))

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, in key order."""
        with self._errors(f"list s3://{bucket}/{prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield _listed(obj)

    @gc_paused()
    def list_all(self, bucket: str, prefix: str = "", *, threads: int = 4, max_depth: int = 3,
                 max_folders: int = 64) -> list[ObjectInfo]:
        """Every object under ``prefix``, in key order, listed by ``threads`` requests at a time.

        A single listing is one request after another, each waiting on the server and then parsed
        here. This one first walks the folders under ``prefix`` ('/'-delimited listings, down to
        ``max_depth`` levels or until there are enough of them to keep ``threads`` busy), then lists
        each folder in full on its own thread, so the server answers one request while another
        answer is parsed. An object at a walked level comes from that level's delimited listing;
        every other key is under exactly one of the folders listed in full. Where folders would cost
        more requests than they save (a walked folder with more than one page of entries, or more
        than ``max_folders`` folders, as with one folder per object), it is one plain listing.
        """
        if threads < 2:
            return list(self.list(bucket, prefix))
        found: list[ObjectInfo] = []
        folders = [prefix]
        for _ in range(max_depth):
            if not folders or len(folders) >= 2 * threads:
                break
            below: list[str] = []
            for folder in folders:
                level = self._list_level(bucket, folder)
                if level is None:
                    return list(self.list(bucket, prefix))
                found.extend(level[0])
                below.extend(level[1])
            folders = below
        if len(folders) > max_folders:
            return list(self.list(bucket, prefix))
        if folders:
            with ThreadPoolExecutor(min(threads, len(folders))) as pool:
                for part in pool.map(lambda folder: list(self.list(bucket, folder)), folders):
                    found.extend(part)
        found.sort(key=lambda o: o.key)
        return found

    def _list_level(self, bucket: str, prefix: str) -> tuple[list[ObjectInfo], list[str]] | None:
        """The objects directly under ``prefix`` and the folders one level below it, from one
        delimited request; None when they do not fit in one answer (1,000 entries)."""
        with self._errors(f"list s3://{bucket}/{prefix}"):
            page = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/")
        if page.get("IsTruncated"):
            return None
        return [_listed(obj) for obj in page.get("Contents", [])], [p["Prefix"] for p in page.get("CommonPrefixes", [])]

    def delete(self, bucket: str, key: str) -> None:
        with self._errors(f"delete s3://{bucket}/{key}"):
            self.client.delete_object(Bucket=bucket, Key=key)

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under ``prefix`` (1,000 per request); the number deleted."""
        keys = [o.key for o in self.list(bucket, prefix)]
        for i in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True}
            with self._errors(f"delete under s3://{bucket}/{prefix}"):
                r = self.client.delete_objects(Bucket=bucket, Delete=batch)
            if r.get("Errors"):
                first = r["Errors"][0]
                raise StoreError(f"delete s3://{bucket}/{first['Key']}: {first.get('Code')}: {first.get('Message', '')}")
        return len(keys)
