"""Bulk transfers through the AWS Common Runtime's S3 client (native code for HTTP, signing,
multipart and checksums), so that thousands of small objects cost the Python side almost nothing.

Measured against the embedded SeaweedFS server on two cores, 618 MB in 3,003 files: this path
sent at about 95 MB/s with 2.7 CPU-seconds in the client; boto3's thread pool used 8 CPU-seconds.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from lepton_core.store.objectstore import Encryption, StoreAuthError, StoreError, StoreSettings, error_for_code

MIB = 1024 * 1024
PART_SIZE = 16 * MIB
MULTIPART_THRESHOLD = 32 * MIB
THROUGHPUT_GBPS = 2.0  # more makes the client open more connections than two cores can feed
MAX_IN_FLIGHT = 512


@dataclass(frozen=True)
class PutJob:
    """Upload ``path`` to ``key``; ``sha256`` (hex) is sent for the server to verify and kept as metadata."""

    path: Path
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class GetJob:
    """Download ``key`` into ``path`` (a temporary name; the caller verifies and renames it)."""

    key: str
    path: Path


Done = Callable[[object, "StoreError | None"], None]


class CrtTransfer:
    """Upload and download many objects concurrently with awscrt's S3 client."""

    def __init__(self, settings: StoreSettings, *, encryption: Encryption = "none", kms_key_id: str | None = None,
                 throughput_gbps: float = THROUGHPUT_GBPS) -> None:
        from awscrt.s3 import S3Client, S3RequestTlsMode, create_default_s3_signing_config

        self.settings = settings
        self.encryption = encryption
        self.kms_key_id = kms_key_id
        provider = _credentials_provider(settings)
        if settings.endpoint_url:
            url = urlsplit(settings.endpoint_url)
            self._host, self._path_style, tls = url.netloc, True, url.scheme == "https"
            self._base = url.path.rstrip("/")
        else:
            self._host, self._path_style, tls, self._base = f"s3.{settings.region}.amazonaws.com", False, True, ""
        self._client = S3Client(
            region=settings.region,
            tls_mode=S3RequestTlsMode.ENABLED if tls else S3RequestTlsMode.DISABLED,
            signing_config=create_default_s3_signing_config(region=settings.region, credential_provider=provider),
            part_size=PART_SIZE, multipart_upload_threshold=MULTIPART_THRESHOLD, throughput_target_gbps=throughput_gbps,
        )

    def _target(self, bucket: str, key: str) -> tuple[str, str]:
        """(Host header, request path) for an object: path-style for custom endpoints, virtual-hosted on AWS."""
        quoted = quote(key, safe="/-_.~")
        if self._path_style:
            return self._host, f"{self._base}/{bucket}/{quoted}"
        return f"{bucket}.{self._host}", f"/{quoted}"

    def put_files(self, bucket: str, jobs: Iterable[PutJob], on_done: Done) -> None:
        """Upload every job, calling ``on_done(job, error_or_None)`` as each ends (from CRT threads)."""
        from awscrt.http import HttpHeaders, HttpRequest
        from awscrt.s3 import S3ChecksumAlgorithm, S3ChecksumConfig, S3ChecksumLocation, S3RequestType

        def submit(job: PutJob, finished: Callable) -> None:
            host, path = self._target(bucket, job.key)
            headers = [("Host", host), ("Content-Length", str(job.size)), ("Content-Type", "application/octet-stream"),
                       ("x-amz-meta-sha256", job.sha256)]
            if self.encryption != "none":
                headers.append(("x-amz-server-side-encryption", self.encryption))
                if self.kms_key_id:
                    headers.append(("x-amz-server-side-encryption-aws-kms-key-id", self.kms_key_id))
            checksum = None
            if job.size < MULTIPART_THRESHOLD:  # one request: the server checks the whole object's SHA-256
                headers.append(("x-amz-checksum-sha256", base64.b64encode(bytes.fromhex(job.sha256)).decode()))
            else:  # multipart: the client computes a SHA-256 per part and the server checks each part
                checksum = S3ChecksumConfig(algorithm=S3ChecksumAlgorithm.SHA256, location=S3ChecksumLocation.HEADER)
            self._client.make_request(
                type=S3RequestType.PUT_OBJECT, request=HttpRequest("PUT", path, HttpHeaders(headers)),
                send_filepath=str(job.path), checksum_config=checksum, on_done=finished,
            )

        self._run(jobs, submit, on_done, f"upload to s3://{bucket}")

    def get_files(self, bucket: str, jobs: Iterable[GetJob], on_done: Done) -> None:
        """Download every job into its ``path``, calling ``on_done(job, error_or_None)`` as each ends."""
        from awscrt.http import HttpHeaders, HttpRequest
        from awscrt.s3 import S3RequestType

        def submit(job: GetJob, finished: Callable) -> None:
            host, path = self._target(bucket, job.key)
            job.path.parent.mkdir(parents=True, exist_ok=True)
            self._client.make_request(
                type=S3RequestType.GET_OBJECT, request=HttpRequest("GET", path, HttpHeaders([("Host", host)])),
                recv_filepath=str(job.path), on_done=finished,
            )

        self._run(jobs, submit, on_done, f"download from s3://{bucket}")

    def _run(self, jobs: Iterable, submit: Callable, on_done: Done, what: str) -> None:
        """Submit jobs with at most MAX_IN_FLIGHT outstanding; return when all have ended."""
        slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        outstanding = 0
        all_done = threading.Condition()
        ended = 0

        for job in jobs:
            slots.acquire()
            outstanding += 1

            def finished(error=None, status_code=None, error_body=None, job=job, **_kw) -> None:
                nonlocal ended
                try:
                    on_done(job, None if error is None else self._error(f"{what}/{job.key}", error, status_code, error_body))
                finally:
                    slots.release()
                    with all_done:
                        ended += 1
                        all_done.notify_all()

            try:
                submit(job, finished)
            except Exception as exc:  # refused before it started (a bad path, say)
                finished(error=exc)
        with all_done:
            all_done.wait_for(lambda: ended == outstanding)

    def _error(self, what: str, error: BaseException, status: int | None, body: bytes | None) -> StoreError:
        if status:
            text = (body or b"").decode("utf-8", "replace")
            code = _xml(text, "Code") or str(status)
            return error_for_code(what, code, _xml(text, "Message") or "", self.settings)
        name = getattr(error, "name", type(error).__name__)
        if "CREDENTIALS" in name or "SIGN" in name:
            return StoreAuthError(f"{what}: no usable credentials for {self.settings.display_endpoint} ({name})")
        if isinstance(error, OSError) and not name.startswith("AWS_"):
            return StoreError(f"{what}: {error}")
        return StoreError(f"{what}: cannot reach the object store at {self.settings.display_endpoint} ({name})", transient=True)


def _xml(text: str, tag: str) -> str | None:
    m = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.S)
    return m.group(1).strip() if m else None


def _credentials_provider(settings: StoreSettings):
    """Explicit keys when given, else the same chain as boto3 (environment, profiles, roles)."""
    from awscrt.auth import AwsCredentialsProvider

    if settings.access_key_id and settings.secret_access_key:
        return AwsCredentialsProvider.new_static(settings.access_key_id, settings.secret_access_key.get_secret_value())
    import botocore.session
    from s3transfer.crt import BotocoreCRTCredentialsWrapper

    creds = botocore.session.Session().get_credentials()
    if creds is None:
        raise StoreAuthError(f"no credentials found for {settings.display_endpoint} (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
    return BotocoreCRTCredentialsWrapper(creds).to_crt_credentials_provider()
